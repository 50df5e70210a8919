"""The README's real-data command, as written, on small datasets in the CVUSA, CVACT and VIGOR layouts.

The paper configs are used exactly as shipped; one extra config file shrinks only sizes, epochs and counts (and
names a local weights file for the tiny backbone that replaces ConvNeXt-B), and `--config dataset=...` gives the
root, as the README does. Each run goes through the whole DAG to `summary.csv` and the report (CVACT's with no
round after the cold start: its rounds are CVUSA's rules), and each layout's
own outputs are checked there: coordinates and distance recalls (CVACT's UTM, VIGOR's file names), VIGOR's
semi-positives, whole-city gallery, hit rate and per-city labeled subset. VIGOR's file also turns on approximate
matching through a FAISS HNSW index (the README's option for large galleries, not the paper's), so the index
rule runs in one whole DAG.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from tests.dag import REPO, SNAKEMAKE
from tests.fixtures import write_cvact_fixture, write_cvusa_fixture, write_vigor_fixture

#: Sizes only: the paper's settings (SAFA head, schedule, thresholds, CycleGAN, no cvgl additions) stay as shipped.
SHRINK = """\
threads: 1
project: {{pano_size: [16, 64], size: 32}}
translate: {{cyclegan: {{size: 32, ngf: 4, ndf: 4, blocks: 1, epochs: 1, epochs_decay: 0, batch_size: 2,
                        pool_size: 2}}}}
model: {{backbone: convnext_atto, weights: {weights}, ground_size: [32, 64], satellite_size: [32, 32]}}
optim: {{batch_size: 4}}
coldstart: {{intra: {{epochs: 1}}, cross: {{epochs: 1}}}}
rounds: {{count: 1, epochs: 1}}
evaluate: {{batch_size: 8}}
"""
SHRINK_VIGOR = (SHRINK.replace("coldstart: {{intra: {{epochs: 1}}, cross: {{epochs: 1}}}}\n", "")  # no cold start
                + "labels: {{index: HNSW32, search: efSearch=16}}\n")
#: CVACT's rounds are CVUSA's rules with another t0 (tests/test_config.py checks it), so its run stops at the cold
#: start's evaluation: what it adds is its own coordinates, checked there.
SHRINK_CVACT = SHRINK.replace("rounds: {{count: 1, epochs: 1}}", "rounds: {{count: 0}}")
SHRINKS = {"cvusa": SHRINK, "cvact": SHRINK_CVACT, "vigor": SHRINK_VIGOR}


def write_dataset(layout: str, root: Path) -> None:
    if layout == "cvusa":
        write_cvusa_fixture(root, n_train=8, n_test=4, pano_hw=(16, 88), tile=16)
    elif layout == "cvact":
        write_cvact_fixture(root, n_train=8, n_val=4)
    else:
        # 10 train panoramas: the config's gt_ratio 0.1 labels one of them
        write_vigor_fixture(root, cities=("Chicago",), n_tiles=8, n_train={"Chicago": 10}, n_test=4)


def write_weights(path: Path) -> Path:
    """A convnext_atto state dict with its classifier, as timm writes one (random values: nothing downloads)."""
    torch.manual_seed(0)
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("layout", ["cvusa", "cvact", "vigor"])
def test_the_readme_real_data_command_runs_each_paper_config_to_the_summary(tmp_path: Path, layout: str) -> None:
    root = tmp_path / layout.upper()
    write_dataset(layout, root)
    weights = write_weights(tmp_path / "convnext_atto.safetensors")
    small = tmp_path / "small.yaml"
    small.write_text(SHRINKS[layout].format(weights=weights))
    # snakemake --cores N --configfile configs/<dataset>.yaml --config dataset='{root: /path/to/<DATASET>}'
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "2",
           "--configfile", str(REPO / "configs" / f"{layout}.yaml"), str(small),
           "--config", f"dataset={{root: {root}}}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run = {"cvusa": "cvusa-unsupervised", "cvact": "cvact-unsupervised", "vigor": "vigor-same-area"}[layout]
    results = tmp_path / "results" / run
    summary = pd.read_csv(results / "summary.csv")
    assert summary["round"].tolist() == ([0] if layout == "cvact" else [0, 1]) and summary["R@1"].between(0, 1).all()
    resolved = (results / "report" / "config.yaml").read_text()
    assert "prior_weight: 0" in resolved and "csls_k: 0" in resolved and "method: cyclegan" in resolved
    checkpoint = torch.load(results / "round-0" / "model.pt", map_location="cpu", weights_only=False)
    if layout == "vigor":  # no cold start: round 0 is the pretrained backbone itself, as in the paper
        assert not (results / "projected").exists() and not (results / "translated").exists()
        torch.testing.assert_close(checkpoint["model"]["ground.backbone.stem.0.weight"],
                                   load_file(str(weights))["stem.0.weight"], rtol=0, atol=0)
    else:
        assert (results / "translator" / "model.pt").exists()  # the paper's CycleGAN translated the projections
    assert checkpoint["model"]["ground.mean"].flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    check_layout_outputs(layout, results, summary)


def check_layout_outputs(layout: str, results: Path, summary: pd.DataFrame) -> None:
    """What each layout's adapter brings to the run's outputs (CVUSA's fixture has no GPS table: no distances)."""
    images = pd.read_parquet(results / "manifest" / "images.parquet")
    truth = pd.read_parquet(results / "manifest" / "truth.parquet")
    if layout == "cvusa":
        assert (truth.kind == "positive").all() and "R@25m" not in summary.columns
        return
    retrievals = pd.read_parquet(results / f"round-{summary['round'].max()}" / "retrievals.parquet")
    assert images[["lat", "lon"]].notna().all().all()
    assert retrievals.top1_distance_m.notna().all() and (retrievals.top1_distance_m >= 0).all()
    assert {"R@25m", "R@50m", "R@100m", "median_error_m"} <= set(summary.columns)
    assert (summary["R@25m"] <= summary["R@100m"]).all()
    if layout == "cvact":
        assert (truth.kind == "positive").all() and "hit_rate" not in summary.columns
        return
    assert (results / "round-0" / "index" / "train-satellite.faiss").exists()  # labels.index: HNSW32
    assert (truth.kind == "semi_positive").any() and "city" in images.columns
    assert summary["hit_rate"].between(0, 1).all() and (summary["hit_rate"] >= summary["R@1"]).all()
    test_tiles = ((images.view == "satellite") & (images.split == "test")).sum()
    assert test_tiles > ((images.view == "ground") & (images.split == "test")).sum()  # the whole city gallery
    labels = pd.read_parquet(results / "round-1" / "labels.parquet")
    assert (labels.source == "labeled").sum() == 1  # gt_ratio 0.1 of Chicago's 10 train panoramas
