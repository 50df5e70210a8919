"""The CVUSA adapter: a fixture in the published layout -> the design's manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvgl.data.cvusa import build_cvusa_manifests
from cvgl.data.manifest import read_images, read_labeled, read_truth, write_manifests
from tests.fixtures import write_cvusa_fixture


def test_manifests_list_every_pair_with_opaque_ids(tmp_path: Path) -> None:
    rows = write_cvusa_fixture(tmp_path / "CVUSA", n_train=10, n_test=5)
    m = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.0, seed=0)
    write_manifests(m, tmp_path / "manifest")
    images, truth = read_images(tmp_path / "manifest"), read_truth(tmp_path / "manifest")
    counts = images.groupby(["split", "view"]).size().to_dict()
    assert counts == {("test", "ground"): 5, ("test", "satellite"): 5, ("train", "ground"): 10,
                      ("train", "satellite"): 10}
    assert images.image_id.is_unique
    # every truth pair is a row of the split file, joined through paths only here, in the test
    path = images.set_index("image_id").path
    pairs = {(path[g], path[s]) for g, s in zip(truth.ground_id, truth.satellite_id, strict=True)}
    assert pairs == {(grd, sat) for _, sat, grd in rows}
    assert (truth.kind == "positive").all()
    # ids carry no pairing: no shared stem, and sorting by id does not line the two views up
    for g, s in zip(truth.ground_id, truth.satellite_id, strict=True):
        assert g[1:] != s[1:] and Path(path[g]).stem not in g and Path(path[s]).stem not in s
    g_sorted = images[images.view == "ground"].sort_values("image_id").path.map(lambda p: Path(p).stem).tolist()
    s_sorted = images[images.view == "satellite"].sort_values("image_id").path.map(lambda p: Path(p).stem).tolist()
    assert g_sorted != s_sorted
    assert len(read_labeled(tmp_path / "manifest")) == 0


def test_labeled_subset_follows_gt_ratio_and_seed(tmp_path: Path) -> None:
    write_cvusa_fixture(tmp_path / "CVUSA", n_train=20, n_test=4)
    a = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.25, seed=1).labeled
    b = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.25, seed=1).labeled
    c = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.25, seed=2).labeled
    full = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=1.0, seed=1)
    assert len(a) == 5 and a.equals(b) and not a.equals(c)
    train_truth = full.truth.merge(full.images, left_on="ground_id", right_on="image_id")
    assert len(full.labeled) == int((train_truth.split == "train").sum()) == 20
    assert set(map(tuple, a.values)) <= set(map(tuple, full.truth[["ground_id", "satellite_id"]].values))


def test_bad_split_line_names_file_and_line(tmp_path: Path) -> None:
    write_cvusa_fixture(tmp_path / "CVUSA", n_train=3, n_test=2)
    split = tmp_path / "CVUSA" / "splits" / "train-19zl.csv"
    split.write_text(split.read_text() + "bingmap/19/0000099.jpg,streetview/panos/0000099.jpg\n")
    with pytest.raises(ValueError, match=r"train-19zl\.csv:4: expected 3"):
        build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.0, seed=0)


def test_missing_image_and_root_are_named(tmp_path: Path) -> None:
    write_cvusa_fixture(tmp_path / "CVUSA", n_train=3, n_test=2)
    (tmp_path / "CVUSA" / "bingmap/19/0000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="0000002.jpg"):
        build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.0, seed=0)
    with pytest.raises(FileNotFoundError, match="dataset.root"):
        build_cvusa_manifests(tmp_path / "nowhere", gt_ratio=0.0, seed=0)


def test_null_settings_take_the_papers_values_for_the_dataset_read() -> None:
    from cvgl.config import with_paper_defaults

    base = {"dataset": {"name": "synth"}, "synth": {}, "rounds": {"t0": None},
            "project": {"fov_deg": None, "band": None}}
    cvusa = with_paper_defaults(base)
    assert (cvusa["rounds"]["t0"], cvusa["project"]["fov_deg"], cvusa["project"]["band"]) == (0.05, 175.0, True)
    vigor = with_paper_defaults({**base, "synth": {"layout": "vigor"}})
    assert (vigor["rounds"]["t0"], vigor["project"]["band"]) == (0.035, False)
    cvact = with_paper_defaults({**base, "dataset": {"name": "cvact"}, "rounds": {"t0": 0.1}})
    assert cvact["rounds"]["t0"] == 0.1 and cvact["project"]["fov_deg"] == 170.0  # a set value is kept
    assert base["rounds"]["t0"] is None  # the input is not modified
