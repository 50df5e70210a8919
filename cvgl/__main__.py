import sys

from cvgl.cli import main

sys.exit(main())
