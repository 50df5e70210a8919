"""The whole Snakemake DAG on a tiny synthetic config: it runs, is complete, caches and reruns what changed
(determinism: tests/test_determinism.py; kill -9 resumes: tests/test_resume.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cvgl.label_table import LABEL_COLUMNS
from tests.dag import REPO, copy_run, run_ok, scheduled_rules, snakemake


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


def test_rounds_between_evaluations_embed_no_test_image_and_a_finished_run_redoes_only_its_summary(
        tiny_run: Path, tmp_path: Path) -> None:
    """`evaluate.every: 2` on the tiny run's two rounds: round 1 still embeds the train split, relabels and
    trains (round 2 needs it), but no job embeds or evaluates its test split; on the finished run the change
    schedules the summary, what reads it and the resolved config: no embedding, evaluation or training."""
    every = tmp_path / "every.yaml"
    every.write_text("evaluate: {every: 2}\n")
    (tmp_path / "fresh").mkdir()
    fresh = snakemake(tmp_path / "fresh", "-n", "--configfile", str(REPO / "config.yaml"),
                      str(REPO / "tests" / "tiny.yaml"), str(every))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    for made in ("round-1/embeddings/train", "round-1/labels.parquet", "round-2/model.pt",
                 "round-0/metrics.json", "round-2/metrics.json"):
        assert f"/{made}" in fresh.stdout, made
    assert "round-1/embeddings/test" not in fresh.stdout and "round-1/metrics.json" not in fresh.stdout
    finished = snakemake(copy_run(tiny_run, tmp_path / "finished"), "-n", "--quiet", "rules", "--configfile",
                         str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"), str(every))
    assert finished.returncode == 0, finished.stderr[-3000:]
    scheduled = scheduled_rules(finished.stdout)
    assert "summary" in scheduled, finished.stdout
    assert scheduled <= {"resolved_config", "summary", "plots", "summary_table", "all"}, finished.stdout


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
    scheduled = scheduled_rules(proc.stdout)
    assert not absent & scheduled, proc.stdout
    assert present <= scheduled, proc.stdout
