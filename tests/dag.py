"""Running the workflow's Snakefile on the tiny test config (tests/tiny.yaml) from a test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake in `workdir` with config.yaml and tests/tiny.yaml, then `args`; output captured."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def run_ok(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`snakemake(workdir, *args)`, failing the test with the end of its output unless it succeeded."""
    proc = snakemake(workdir, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the workdir `src` (results and Snakemake's records of them) to run Snakemake in, without the
    lock files a concurrent dry run in `src` may hold at that moment (the shared `tiny_run` is read by both
    pytest-xdist workers)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("locks"))
    return dst


def scheduled_rules(output: str) -> set[str]:
    """The rules a dry run schedules, from its job-stats table (`<rule> <count>` lines; the `total` row left out)."""
    rows = (line.split() for line in output.splitlines())
    return {row[0] for row in rows if len(row) == 2 and row[1].isdigit()} - {"total"}
