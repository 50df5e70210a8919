"""A job killed with SIGKILL resumes after its last finished epoch and ends as an uninterrupted run (its own
file: under two pytest-xdist workers it runs beside the other whole-DAG files)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.dag import REPO, SNAKEMAKE, copy_run, run_ok


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    """Snakemake in its own process group (it and its jobs can be killed together), output to a file."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    with open(workdir / "killed-run.out", "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finished_epochs(state: Path) -> int:
    return int(torch.load(state, map_location="cpu", weights_only=False)["epoch"]) if state.exists() else 0


def kill_after_first_epoch(proc: subprocess.Popen[bytes], state: Path, timeout: float = 600) -> int:
    """SIGKILL the whole Snakemake process group once `state` records a finished epoch; return that epoch."""
    deadline = time.time() + timeout
    while not state.exists():
        assert proc.poll() is None, f"snakemake ended before {state.name} appeared"
        assert time.time() < deadline, f"no {state.name} after {timeout} s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return finished_epochs(state)


@pytest.mark.parametrize(("override", "output", "rule"), [
    ("coldstart: {cross: {epochs: 5, smoothing: 0.3}}", "round-0/model.pt", "cross_view"),  # ~1 s per epoch
    # a CycleGAN at the projections' 32 px, narrow: the resume path, not the translation, is under test
    ("translate: {method: cyclegan, cyclegan: {size: 32, ngf: 8, ndf: 8, blocks: 1, epochs: 3, epochs_decay: 3}}",
     "translator/model.pt", "translate"),
])
def test_a_job_killed_with_sigkill_resumes_after_its_last_epoch_and_matches_an_uninterrupted_run(
        tiny_run: Path, tmp_path: Path, override: str, output: str, rule: str) -> None:
    work = tmp_path / "work"
    copy_run(tiny_run, work)  # the upstream outputs and Snakemake's records of them: only `rule` reruns
    extra = tmp_path / "longer.yaml"
    extra.write_text(override + "\n")
    rel = f"results/tiny/{output}"  # Snakemake matches targets against the rules' relative outputs
    target = work / rel
    state = target.with_name(target.name + ".state")
    args = ("--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"), str(extra))

    done = kill_after_first_epoch(start_snakemake(work, *args, "--", rel), state)
    assert 1 <= done and not target.exists()  # the finished epochs are kept, nothing looks complete
    run_ok(work, "--unlock", *args)  # a SIGKILLed Snakemake cannot release its lock
    run_ok(work, "--rerun-incomplete", *args, "--", rel)
    log = (work / "results" / "tiny" / "logs" / f"{rule}.log").read_text()
    assert f"resuming after epoch {done}" in log, log[-2000:]  # Snakemake left the undeclared .state in place
    assert not state.exists()
    resumed = torch.load(target, map_location="cpu", weights_only=False)["model"]

    run_ok(work, "--forcerun", rule, *args, "--", rel)  # the same job, uninterrupted
    assert "resuming" not in (work / "results" / "tiny" / "logs" / f"{rule}.log").read_text()
    uninterrupted = torch.load(target, map_location="cpu", weights_only=False)["model"]
    assert resumed.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
