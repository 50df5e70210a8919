"""The synthetic world is written in the CVUSA layout, deterministically, atomically, with train and test
locations from disjoint areas."""

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvgl.synth import SynthConfig, synth_config_from_dict, write_synthetic_cvusa, writing

TINY = SynthConfig(train_locations=12, test_locations=6, tile_size=64, pano_width=256)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path, name: str) -> list[list[str]]:
    with (root / "splits" / name).open() as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "CVUSA"
    write_synthetic_cvusa(TINY, root, seed=11, progress=False)
    return root


def test_writes_the_cvusa_layout(tiny):
    train, test = _rows(tiny, "train-19zl.csv"), _rows(tiny, "val-19zl.csv")
    assert len(train) == 12 and len(test) == 6
    ids = []
    for sat, pano, annotation in train + test:
        stem = Path(sat).stem
        assert sat == f"bingmap/19/{stem}.jpg" and pano == f"streetview/panos/{stem}.jpg"
        assert annotation == f"streetview/annotations/{stem}.png"
        assert len(stem) == 7 and stem.isdigit()
        ids.append(int(stem))
        assert Image.open(tiny / sat).size == (64, 64)
        assert Image.open(tiny / pano).size == (256, round(256 * 224 / 1232))
        assert Image.open(tiny / pano).format == "JPEG"
    assert len(set(ids)) == len(ids) == 18
    assert (tiny / "world.json").exists() and (tiny / "split_locations" / "all.csv").exists()


def test_same_seed_same_bytes_other_seed_other_world(tiny, tmp_path):
    again = tmp_path / "again"
    write_synthetic_cvusa(TINY, again, seed=11, progress=False)
    assert _files(again) == _files(tiny)
    other = tmp_path / "other"
    write_synthetic_cvusa(TINY, other, seed=12, progress=False)
    ours, theirs = _files(tiny), _files(other)
    shared_images = [k for k in ours.keys() & theirs.keys() if k.endswith(".jpg")]
    assert shared_images and all(ours[k] != theirs[k] for k in shared_images)


def test_rendering_on_two_worker_processes_writes_the_same_bytes(tiny, tmp_path):
    forked = tmp_path / "forked"
    write_synthetic_cvusa(TINY, forked, seed=11, progress=False, workers=2)
    assert _files(forked) == _files(tiny)


def test_a_crash_in_a_worker_process_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(writing, "render_panorama", crash)  # the forked workers inherit the patch
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="boom"):
        write_synthetic_cvusa(TINY, crashed, seed=11, progress=False, workers=2)
    assert not crashed.exists() and not list(tmp_path.glob("*.tmp-*"))


def test_train_and_test_locations_come_from_disjoint_areas(tiny):
    with (tiny / "locations.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    xy = {split: np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows if r["split"] == split])
          for split in ("train", "test")}
    gap = np.linalg.norm(xy["train"][:, None] - xy["test"][None], axis=-1).min()
    assert gap > 2 * TINY.tile_half_extent_m  # no test tile overlaps a train tile
    spacing = np.linalg.norm(xy["train"][:, None] - xy["train"][None], axis=-1)
    assert spacing[~np.eye(len(spacing), dtype=bool)].min() >= TINY.min_spacing_m


def test_write_is_atomic(tiny, tmp_path, monkeypatch):
    assert not list(tiny.parent.glob("*.tmp-*")) and not list(tiny.parent.glob("*.old-*"))
    # Overwriting an existing dataset replaces it.
    root = tmp_path / "CVUSA"
    (root / "stale").mkdir(parents=True)
    write_synthetic_cvusa(TINY, root, seed=11, progress=False)
    assert not (root / "stale").exists() and (root / "splits" / "val-19zl.csv").exists()

    # A crash half-way leaves neither a dataset nor a temporary directory behind.
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(writing, "render_panorama", crash)
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="boom"):
        write_synthetic_cvusa(TINY, crashed, seed=11, progress=False)
    assert not crashed.exists() and not list(tmp_path.glob("*.tmp-*"))


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"synth\.bogus_knob"):
        synth_config_from_dict({"bogus_knob": 1})
    with pytest.raises(ValueError, match=r"synth\.tile_size"):
        synth_config_from_dict({"tile_size": 0})
    with pytest.raises(ValueError, match=r"synth\.sat_gain"):
        synth_config_from_dict({"sat_gain": [1.0, 2.0]})
    cfg = synth_config_from_dict({"train_locations": 10, "sat_gain": [1, 1, 1]})
    assert cfg == dataclasses.replace(SynthConfig(), train_locations=10, sat_gain=(1.0, 1.0, 1.0))
    assert cfg.pano_height == 93 and cfg.tile_half_extent_m == pytest.approx(45.81, abs=0.01)
