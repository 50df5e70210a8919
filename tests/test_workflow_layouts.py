"""The whole DAG on the synthetic world written in the CVACT and VIGOR layouts (their own file: under two
pytest-xdist workers it runs beside tests/test_workflow.py, whose tests share one tiny run)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.dag import REPO, run_ok


@pytest.mark.parametrize("layout", ["cvact", "vigor"])
def test_dag_runs_on_the_synthetic_world_in_each_published_layout(tmp_path: Path, layout: str) -> None:
    """The world written as CVACT (ACT_data.mat, full panoramas) or VIGOR (shared tiles, semi-positives) goes
    through that layout's adapter and every stage up to the summary, full panoramas projected without the CVUSA
    band. (The report rules and the intra-view stage do not see the layout; `tiny_run` covers them.)"""
    override = tmp_path / f"{layout}.yaml"
    override.write_text(
        f"run: tiny-{layout}\n"
        f"synth: {{layout: {layout}, train_locations: 16, test_locations: 8, tile_size: 32, pano_width: 128,"
        " min_spacing_m: 30.0}\n"
        "project: {pano_size: [64, 128], size: 32, fov_deg: 170.0, band: false, batch_size: 16}\n"
        "rounds: {count: 1, epochs: 1, t0: 0.0, gt_ratio: 0.25, labeled_ratio: 0.0, smoothing: 0.1}\n"
        "coldstart: {intra: {epochs: 0, smoothing: 0.1}}\n"
        # VIGOR: approximate matching through an HNSW index of the tiles (the index rule runs only then)
        + ("labels: {index: HNSW32, search: efSearch=16, prior_weight: 0.0, csls_k: 0}\n" if layout == "vigor" else ""))
    run_ok(tmp_path, "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"), str(override),
           "--", f"results/tiny-{layout}/summary.csv")
    res = tmp_path / "results" / f"tiny-{layout}"
    summary = pd.read_csv(res / "summary.csv")
    assert summary["round"].tolist() == [0, 1] and summary["R@1"].notna().all()
    images = pd.read_parquet(res / "manifest" / "images.parquet")
    truth = pd.read_parquet(res / "manifest" / "truth.parquet")
    labels = pd.read_parquet(res / "round-1" / "labels.parquet")
    # Both layouts carry coordinates: every test query's top-1 has a distance, and the summary its figures.
    retrievals = pd.read_parquet(res / "round-1" / "retrievals.parquet")
    assert retrievals.top1_distance_m.notna().all() and (retrievals.top1_distance_m >= 0).all()
    assert {"R@25m", "R@50m", "R@100m", "median_error_m"} <= set(summary.columns)
    assert (summary["R@25m"] <= summary["R@100m"]).all()
    assert images[["lat", "lon"]].notna().all().all()
    assert (labels.source == "labeled").sum() > 0  # gt_ratio's labeled pairs reach the label table
    if layout == "vigor":
        assert (res / "round-0" / "index" / "train-satellite.faiss").exists()
        assert (truth.kind == "semi_positive").any() and "city" in images.columns
        assert summary["hit_rate"].between(0, 1).all() and (summary["hit_rate"] >= summary["R@1"]).all()
        test_tiles = ((images.view == "satellite") & (images.split == "test")).sum()
        assert test_tiles > ((images.view == "ground") & (images.split == "test")).sum()  # the whole city gallery
    else:
        assert (truth.kind == "positive").all() and "hit_rate" not in summary.columns
