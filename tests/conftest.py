"""Suite-wide collection order, and the one tiny workflow run that several test files read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

from tests.dag import run_ok

#: Files of whole-DAG runs (minutes each). Collected first, so that under two pytest-xdist workers
#: (`--dist loadfile`, pyproject.toml) they start at once and the short files fill in beside them.
SLOW_FILES = ("test_workflow.py", "test_workflow_real_data.py", "test_determinism.py", "test_resume.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the whole-DAG files to the front in SLOW_FILES' order (the file that makes the shared tiny run first,
    then one that needs none, so neither worker waits for it), keeping every other order as collected."""
    items.sort(key=lambda item: SLOW_FILES.index(item.path.name) if item.path.name in SLOW_FILES
               else len(SLOW_FILES))


def session_folder(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The test session's temporary folder, common to its pytest-xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_worker(worker_id: str) -> None:
    """Under pytest-xdist each worker computes on one thread: the two workers (and the jobs of their Snakemake
    runs) already fill the cores, and torch's default of a thread per core in each would oversubscribe them."""
    if worker_id != "master":
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def cvgl_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """cvgl's per-user cache (remembered backbone checks) in the session's folder, not the user's home: the
    suite's Snakemake runs, and the jobs they start, share it."""
    folder = session_folder(tmp_path_factory, worker_id) / "cvgl-cache"
    os.environ["CVGL_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The workflow on tests/tiny.yaml (`snakemake` with config.yaml and tiny.yaml), made once per test session
    and shared by the pytest-xdist workers: the first to ask runs it under a file lock, the others wait and
    read it. Tests read it; a test that runs Snakemake in it again (other targets, other configs) works on a
    copy, so no worker sees another's half-written files or locks."""
    shared = session_folder(tmp_path_factory, worker_id)
    workdir = shared / "tiny-run"
    with FileLock(str(shared / "tiny-run.lock")):
        if not (workdir / ".complete").exists():
            workdir.mkdir(exist_ok=True)
            run_ok(workdir)
            (workdir / ".complete").touch()
    return workdir
