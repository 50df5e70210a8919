"""The whole Snakemake DAG on a tiny synthetic config: it runs, is complete, caches, reruns what changed
and is deterministic."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from cvgl.label_table import LABEL_COLUMNS
from tests.dag import REPO, SNAKEMAKE, copy_run, run_ok, snakemake


def test_dag_makes_every_artifact(tiny_run: Path) -> None:
    res = tiny_run / "results" / "tiny"
    summary = pd.read_csv(res / "summary.csv")
    assert summary["round"].tolist() == [0, 1, 2]
    assert summary[["R@1", "R@5", "R@10", "R@1%"]].notna().all().all()
    for n in (1, 2):
        labels = pd.read_parquet(res / f"round-{n}" / "labels.parquet")
        assert tuple(labels.columns) == LABEL_COLUMNS
        assert len(labels) == 24 and labels.ground_id.is_unique
        assert labels.loc[labels.kept, "correct"].notna().all()  # diagnostics filled it
        assert pd.read_parquet(res / f"round-{n}" / "matches.parquet")["correct"].isna().all()
        metrics = json.loads((res / f"round-{n}" / "metrics.json").read_text())
        assert metrics["labels_kept"] == int(labels.kept.sum())
    for path in ["manifest/images.parquet", "manifest/truth.parquet", "manifest/labeled.parquet",
                 "projected/index.parquet", "translated/index.parquet", "translator/model.pt",
                 "round-0/model.pt", "round-2/embeddings/test",
                 "plots/rounds.png", "plots/round-1-margins.png", "plots/round-2-margins.png"]:
        assert (res / path).exists(), path
    assert not list(res.glob("round-*/index"))  # exact matching (labels.index: Flat) reads no index: none is built
    assert list((res / "logs").rglob("*.log")) and list((res / "benchmarks").rglob("*.tsv"))


def test_second_run_does_nothing(tiny_run: Path) -> None:
    proc = run_ok(tiny_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_report_collects_the_plots_samples_config_and_summary(tiny_run: Path, tmp_path: Path) -> None:
    """`snakemake --report` only collects what `rule all` made: it runs no job and embeds every item."""
    report = tmp_path / "report.html"
    run_ok(tiny_run, "--report", str(report))
    html = report.read_text(encoding="utf-8")
    found = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', html, re.S)
    assert found, "no results block in the report"
    items = {Path(path).name: item for path, item in json.loads(found.group(1)).items()}
    assert {"rounds.png", "round-1-margins.png", "round-2-margins.png", "samples.png", "config.yaml",
            "summary.csv", "summary.html"} <= items.keys()
    for name in ("rounds.png", "round-1-margins.png", "samples.png"):
        assert items[name]["mime_type"] == "image/png" and items[name]["data_uri"].startswith("data:image/png")
        assert items[name]["caption"].strip(), name  # the caption from workflow/report/
    assert items["round-2-margins.png"]["labels"] == {"round": "2"}
    assert "cvgl: unsupervised cross-view geo-localization" in html  # the workflow description
    resolved = yaml.safe_load((tiny_run / "results" / "tiny" / "report" / "config.yaml").read_text())
    assert resolved["run"] == "tiny" and resolved["rounds"]["count"] == 2


def test_changing_a_round_reruns_it_and_later_rounds_only(tiny_run: Path, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text('rounds: {overrides: {"2": {epochs: 2}}}\n')
    proc = snakemake(tiny_run, "-n", "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"),
                     str(override))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    planned = " ".join(line for line in out.splitlines() if line.strip().startswith("output:"))
    assert "round-2/model.pt" in planned and "round-2/metrics.json" in planned
    assert "round-1/" not in planned and "round-0/" not in planned and "coldstart" not in planned


def test_bad_config_value_names_the_key(tmp_path: Path) -> None:
    """Snakemake stops on the config module's one-line messages before any rule runs (the messages of each
    malformed config are checked in-process in tests/test_config.py)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: {count: -1, tresh: 0.1}\n")
    proc = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config.yaml"), str(bad))
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "rounds.count: -1 is less than the minimum of 0" in out and "rounds.tresh: unknown key" in out, out
    assert "Failed validating" not in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("override", "absent", "present"), [
    # Rows (a) and (d) label as the paper does: the projection prior would need the projections they drop.
    ("coldstart: {projection: false}\nlabels: {prior_weight: 0.0}", {"project", "translate", "prior"},
     {"intra_view", "cross_view"}),
    ("translate: {method: none}", {"translate"}, {"project", "intra_view", "cross_view", "prior"}),
    ("coldstart: {intra: {epochs: 0, smoothing: 0.1}}", {"intra_view"}, {"project", "translate", "cross_view"}),
    ("coldstart: {cross: {epochs: 0, smoothing: 0.3}}\nlabels: {prior_weight: 0.0}", {"project", "translate", "prior"},
     {"intra_view", "cross_view"}),
    ("coldstart: {cross: {epochs: 0, smoothing: 0.3}}", {"translate"}, {"project", "prior", "intra_view"}),
])
def test_cold_start_ablation_switches_skip_the_stages_they_no_longer_need(tmp_path: Path, override: str,
                                                                          absent: set[str],
                                                                          present: set[str]) -> None:
    extra = tmp_path / "ablation.yaml"
    extra.write_text(override + "\n")
    proc = snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", str(REPO / "config.yaml"),
                     str(REPO / "tests" / "tiny.yaml"), str(extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scheduled = {line.split()[0] for line in proc.stdout.splitlines() if line.strip() and line.split()[-1].isdigit()}
    assert not absent & scheduled, proc.stdout
    assert present <= scheduled, proc.stdout


CLUSTER_PROFILE = REPO / "workflow" / "profiles" / "cluster-generic-local"


def test_a_second_run_gives_byte_identical_label_tables(tiny_run: Path, tmp_path: Path) -> None:
    """The same config and seed, run again from the same world, make byte-identical label tables (the DAG up to
    them runs again: every job before round 2's labels). The second run keeps no pixel cache (`data.cache:
    false`: every read decodes the image files again), which must not change a byte either. Where
    Snakemake's cluster-generic executor is installed (the `test` extra), every job of the second run is submitted
    through it as its own process (submit.sh, like sbatch): nothing a job needs travels outside its declared
    inputs and params."""
    try:
        import snakemake_executor_plugin_cluster_generic  # noqa: F401
        args: tuple[str, ...] = ("--profile", str(CLUSTER_PROFILE))
    except ImportError:
        args = ()
    # The world's own determinism is tests/test_synth.py's; every job after it runs again here.
    shutil.copytree(tiny_run / "results" / "tiny" / "dataset", tmp_path / "results" / "tiny" / "dataset")
    labels = [f"results/tiny/round-{n}/labels.parquet" for n in (1, 2)]  # their DAG: 15 jobs, no evaluation
    no_cache = tmp_path / "no-cache.yaml"
    no_cache.write_text("data: {cache: false}\n")
    run_ok(tmp_path, *args, "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"),
           str(no_cache), "--", *labels)
    assert list((tmp_path / "results" / "tiny" / "cache").glob("*.files.parquet"))
    assert not list((tmp_path / "results" / "tiny" / "cache").glob("*.npy"))
    if args:
        exits = list((tmp_path / ".snakemake" / "cluster-generic-local").glob("*.exit"))
        assert len(exits) >= 15 and all(p.read_text().strip() == "0" for p in exits)  # the jobs went through submit.sh
    for n in (1, 2):
        a = (tiny_run / "results" / "tiny" / f"round-{n}" / "labels.parquet").read_bytes()
        b = (tmp_path / "results" / "tiny" / f"round-{n}" / "labels.parquet").read_bytes()
        assert a == b, f"round {n} label tables differ between two runs of the same config and seed"


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
    ("translate: {method: cyclegan, cyclegan: {epochs: 2, epochs_decay: 2}}", "translator/model.pt", "translate"),
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
