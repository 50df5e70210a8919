from cvgl.cli import main
import sys

sys.exit(main())
