"""Suite-wide collection order."""

from __future__ import annotations

import pytest

#: Files of whole-DAG runs (minutes each). Collected first, so that under two pytest-xdist workers
#: (`--dist loadfile`, pyproject.toml) they start at once and the short files fill in beside them.
SLOW_FILES = ("test_workflow.py", "test_workflow_layouts.py", "test_workflow_real_data.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the whole-DAG files to the front, keeping every other order as collected."""
    items.sort(key=lambda item: item.path.name not in SLOW_FILES)
