"""The report items that are not plots: sample images per stage, the resolved config, the summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cvgl.data.manifest import read_images, read_truth
from cvgl.data.stages import manifest_stage
from cvgl.io import load_image, save_image, write_parquet
from cvgl.report import (
    choose_samples,
    sample_images,
    summary_html,
    write_resolved_config,
    write_samples,
)
from cvgl.summary import format_summary
from tests.fixtures import write_cvusa_fixture


@pytest.fixture()
def cvusa(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "cvusa"
    write_cvusa_fixture(root, n_train=8, n_test=2)
    manifest_stage({"name": "cvusa"}, root, 0.0, 0, tmp_path / "manifest")
    return root, tmp_path / "manifest"


def fake_stage(out: Path, ground_ids: list[str], value: int) -> Path:
    """A projected/ or translated/ folder (index.parquet + one PNG per panorama) of constant images."""
    for gid in ground_ids:
        save_image(np.full((16, 16, 3), value, np.uint8), out / f"{gid}.png")
    write_parquet(pd.DataFrame({"ground_id": ground_ids, "path": [f"{g}.png" for g in ground_ids]}),
                  out / "index.parquet")
    return out


def test_the_same_seed_draws_the_same_panoramas_and_the_order_of_candidates_does_not_matter() -> None:
    ids = [f"g{i:02d}" for i in range(30)]
    assert choose_samples(ids, 4, seed=3) == choose_samples(ids[::-1], 4, seed=3)
    assert choose_samples(ids, 4, seed=3) != choose_samples(ids, 4, seed=4)
    assert choose_samples(ids[:2], 4, seed=0) == ids[:2]  # fewer candidates than asked: all of them


def test_each_sample_shows_its_panorama_beside_its_own_true_tile(cvusa: tuple[Path, Path]) -> None:
    root, manifest = cvusa
    images = read_images(manifest).set_index("image_id")
    truth = read_truth(manifest).set_index("ground_id")["satellite_id"]
    samples = sample_images(manifest, root, None, None, count=3, seed=0)
    assert len(samples) == 3
    for gid, row in samples:
        assert list(row) == ["panorama", "true tile"]  # no projection or translation given: no such column
        assert images.at[gid, "split"] == "train" and images.at[gid, "view"] == "ground"
        assert np.array_equal(row["panorama"], load_image(root / images.at[gid, "path"]))
        assert np.array_equal(row["true tile"], load_image(root / images.at[truth[gid], "path"]))


def test_samples_come_from_panoramas_every_given_stage_has(cvusa: tuple[Path, Path], tmp_path: Path) -> None:
    root, manifest = cvusa
    images = read_images(manifest)
    train = sorted(images[(images.view == "ground") & (images.split == "train")].image_id)
    projected = fake_stage(tmp_path / "projected", train, 10)
    translated = fake_stage(tmp_path / "translated", train[:3], 200)
    samples = sample_images(manifest, root, projected, translated, count=5, seed=0)
    assert [gid for gid, _ in samples] == train[:3]
    for _, row in samples:
        assert list(row) == ["panorama", "projection", "translation", "true tile"]
        assert (row["projection"] == 10).all() and (row["translation"] == 200).all()

    out = tmp_path / "samples.png"
    assert write_samples(manifest, root, projected, translated, 2, 0, out) == choose_samples(train[:3], 2, 0)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > im.height  # one row per panorama, four columns


def test_resolved_config_reads_back_as_the_same_config(tmp_path: Path) -> None:
    cfg = {"run": "tiny", "rounds": {"count": 2, "t0": 0.05, "overrides": {}}, "model": {"ground_size": [32, 128]}}
    write_resolved_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg


def test_summary_table_shows_recalls_in_percent_and_rounds_without_labels_as_dashes() -> None:
    summary = pd.DataFrame({"round": [0, 1], "R@1": [0.25, 0.5], "R@5": [0.5, 0.75], "R@10": [1.0, 1.0],
                            "R@1%": [0.25, 0.5], "labels_kept": [np.nan, 7.0], "labels_correct": [np.nan, 5.0],
                            "labels_precision": [np.nan, 5 / 7], "labels_coverage": [np.nan, 0.35],
                            "queries": [12, 12], "gallery": [12, 12]})
    html = summary_html(summary)
    assert html.startswith("<!DOCTYPE html>") and "label precision" in html
    for cell in ("25.00", "75.00", "71.43", "35.00", "7", "–"):  # percent, counts as integers, no labels in round 0
        assert f"<td>{cell}</td>" in html, cell


def test_terminal_summary_prints_percent_to_one_digit_and_dashes_for_rounds_without_labels() -> None:
    summary = pd.DataFrame({"round": [0, 1], "R@1": [0.25, 0.5], "R@5": [0.5, 0.75], "R@10": [1.0, 1.0],
                            "R@1%": [0.25, 0.5], "labels_kept": [np.nan, 7.0], "labels_correct": [np.nan, 5.0],
                            "labels_precision": [np.nan, 5 / 7], "labels_coverage": [np.nan, 0.35]})
    header, first, second = format_summary(summary).splitlines()
    assert header.split() == ["round", "R@1", "R@5", "R@10", "R@1%", "kept", "correct", "prec", "cover"]
    assert first.split() == ["0", "25.00", "50.00", "100.00", "25.00", "-", "-", "-", "-"]
    assert second.split() == ["1", "50.00", "75.00", "100.00", "50.00", "7", "5", "71.4", "35.0"]
