"""CVUSA, CVACT and VIGOR adapters on tiny fixtures in the published layouts, including bad data and each
image's coordinates.

Fixtures use the real file names and split formats (ACT_data.mat written with scipy the way MATLAB stores it:
`panoIds` a char matrix, `trainSet`/`valSet` 1x1 structs whose index fields are 1-based double column vectors).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io as sio
from PIL import Image

from cvgl.data.cvact import build_cvact_manifests
from cvgl.data.cvusa import build_cvusa_manifests
from cvgl.data.manifest import Manifests, read_images, read_truth, write_manifests
from cvgl.data.vigor import build_vigor_manifests
from cvgl.geo import haversine_m
from tests.fixtures import (
    random_image,
    vigor_tile_name,
    write_cvact_fixture,
    write_cvusa_fixture,
    write_vigor_fixture,
)


def _paths(m: Manifests) -> pd.Series:
    return m.images.set_index("image_id").path


def _truth_paths(m: Manifests, kind: str = "positive") -> set[tuple[str, str]]:
    path, t = _paths(m), m.truth[m.truth.kind == kind]
    return {(path[g], path[s]) for g, s in zip(t.ground_id, t.satellite_id, strict=True)}


def _assert_opaque(m: Manifests) -> None:
    """Ids are unique salted hashes: view letter + 16 hex digits, nothing of the file name, no shared digest."""
    assert m.images.image_id.is_unique
    assert m.images.image_id.str.fullmatch(r"[gs][0-9a-f]{16}").all()
    assert all(g[1:] != s[1:] for g, s in zip(m.truth.ground_id, m.truth.satellite_id, strict=True))


# ----------------------------------------------------------------------------------------------------- CVACT


@pytest.mark.parametrize("cell", [False, True])
def test_cvact_lists_train_and_val_pairs(tmp_path: Path, cell: bool) -> None:
    root = tmp_path / "CVACT"
    split_ids = write_cvact_fixture(root, cell=cell)
    m = build_cvact_manifests(root, gt_ratio=0.5, seed=0)
    counts = m.images.groupby(["split", "view"]).size().to_dict()
    assert counts == {("test", "ground"): 3, ("test", "satellite"): 3, ("train", "ground"): 6,
                      ("train", "satellite"): 6}
    _assert_opaque(m)
    expected = {(f"streetview/{p}_grdView.jpg", f"satview_polish/{p}_satView_polish.jpg")
                for s in ("train", "test") for p in split_ids[s]}
    assert _truth_paths(m) == expected
    split = m.images.set_index("image_id").split
    assert {split[g] for g in m.truth.ground_id} == {"train", "test"}
    assert all(split[g] == split[s] for g, s in zip(m.truth.ground_id, m.truth.satellite_id, strict=True))
    assert len(m.labeled) == 3 and (split[m.labeled.ground_id] == "train").all()
    assert m.skipped.empty and list(m.skipped.columns) == ["file", "line", "reason"]


def test_cvact_mat_missing_fields_are_named(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    write_cvact_fixture(root)
    mat = sio.loadmat(root / "ACT_data.mat")
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__") and k != "valSet"})
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"ACT_data\.mat: missing field 'valSet'"):
            build_cvact_manifests(root, gt_ratio=0.0, seed=0, strict=strict)
    mat["trainSet"] = {"trainNum": 1.0, "idx": np.array([[1.0]])}
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(ValueError, match=r"ACT_data\.mat: missing field trainSet\.trainInd"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0)
    (root / "ACT_data.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match=r"ACT_data\.mat: not a readable MATLAB"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0)


def test_cvact_v73_needs_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "CVACT"
    root.mkdir()
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    (root / "ACT_data.mat").write_bytes(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py -> ImportError
    with pytest.raises(ValueError, match=r"ACT_data\.mat: is a MATLAB v7\.3 .*needs h5py"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0)


def test_cvact_v73_read_with_h5py(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "CVACT"
    split_ids = write_cvact_fixture(root)
    v5 = build_cvact_manifests(root, gt_ratio=0.0, seed=0)
    mat = sio.loadmat(root / "ACT_data.mat", squeeze_me=True, struct_as_record=False)
    ids = [str(s).strip() for s in mat["panoIds"]]
    (root / "ACT_data.mat").unlink()
    with h5py.File(root / "ACT_data.mat", "w", userblock_size=512) as f:  # MATLAB's v7.3 layout
        width = max(map(len, ids))
        chars = np.array([[ord(c) for c in s.ljust(width)] for s in ids], dtype=np.uint16).T  # stored (L, N)
        f.create_dataset("panoIds", data=chars).attrs["MATLAB_class"] = np.bytes_(b"char")
        for name, field in (("trainSet", "trainInd"), ("valSet", "valInd")):
            g = f.create_group(name)
            g.attrs["MATLAB_class"] = np.bytes_(b"struct")
            g.create_dataset(field, data=getattr(mat[name], field).reshape(1, -1).astype(np.float64))
        f.create_dataset("utm", data=mat["utm"].T).attrs["MATLAB_class"] = np.bytes_(b"double")  # N x 2 -> (2, N)
    with open(root / "ACT_data.mat", "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0)
    assert {p.split("/")[1].split("_grdView")[0] for p in m.images[m.images.view == "ground"].path} == \
        set(split_ids["train"]) | set(split_ids["test"])
    pd.testing.assert_frame_equal(m.images, v5.images)  # utm read back in MATLAB's shape: the same coordinates


def test_cvact_bad_entries_raise_or_skip(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    split_ids = write_cvact_fixture(root)
    gone = split_ids["train"][2]
    (root / "streetview" / f"{gone}_grdView.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=rf"ACT_data\.mat:3: .*{gone}_grdView\.jpg does not exist"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0)
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0, strict=False)
    assert (m.images.split == "train").sum() == 2 * 5 and len(m.skipped) == 1
    assert m.skipped.iloc[0].to_dict() == {"file": "ACT_data.mat", "line": 3,
                                          "reason": m.skipped.iloc[0].reason}
    assert gone in m.skipped.iloc[0].reason
    # an index outside panoIds
    mat = sio.loadmat(root / "ACT_data.mat")
    mat["valSet"][0, 0]["valInd"] = np.vstack([mat["valSet"][0, 0]["valInd"], [[999.0]]])
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(ValueError, match=r"ACT_data\.mat:4: valSet\.valInd\(4\) = 999"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0, check_files=False)
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0, strict=False)
    assert len(m.skipped) == 2 and (m.images.split == "test").sum() == 2 * 3


def test_cvact_test_full_from_mat_or_folder(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    split_ids = write_cvact_fixture(root, test_full=4)
    assert "test_full" not in set(build_cvact_manifests(root, gt_ratio=0.0, seed=0).images.split)
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0, include_test=True)
    full = m.images[m.images.split == "test_full"]
    assert len(full) == 8 and full.path.str.startswith("ANU_data_test/").all()
    assert {p for p, _ in _truth_paths(m) if p.startswith("ANU")} == \
        {f"ANU_data_test/streetview/{p}_grdView.jpg" for p in split_ids["test_full"]}
    # Sample4Geo's layout: no index field, ids = files present in both ANU_data_test folders
    mat = sio.loadmat(root / "ACT_data.mat")
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__") and k != "valSetAll"})
    orphan = root / "ANU_data_test" / "streetview" / "orphanid_grdView.jpg"
    random_image(orphan)
    with pytest.raises(FileNotFoundError, match=r"orphanid_grdView\.jpg: no matching image"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0, include_test=True)
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0, include_test=True, strict=False)
    assert (m.images.split == "test_full").sum() == 8 and len(m.skipped) == 1
    _assert_opaque(m)
    # neither a field nor the folder
    write_cvact_fixture(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"ACT_data\.mat: include_test needs CVACT_test: missing field valSetAll"):
        build_cvact_manifests(tmp_path / "plain", gt_ratio=0.0, seed=0, include_test=True)


def test_cvact_test_full_may_repeat_val_but_not_train(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    write_cvact_fixture(root, test_full=3, test_full_dir=False)
    mat = sio.loadmat(root / "ACT_data.mat")
    full = mat["valSetAll"][0, 0]
    full["valInd"] = np.vstack([full["valInd"], mat["valSet"][0, 0]["valInd"]])  # CVACT_val inside CVACT_test
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0, include_test=True)
    assert (m.images.split == "test_full").sum() == 2 * 6 and m.images.image_id.is_unique  # split-scoped ids
    full["valInd"] = np.vstack([full["valInd"], mat["trainSet"][0, 0]["trainInd"][:1]])  # a train pano: a leak
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(ValueError, match=r"ACT_data\.mat:7: valSetAll\.valInd\(7\): .*already listed in split train"):
        build_cvact_manifests(root, gt_ratio=0.0, seed=0, include_test=True)


# ----------------------------------------------------------------------------------------------------- VIGOR


def test_vigor_same_area_lists_all_tiles_and_semi_positives(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    rows = write_vigor_fixture(root, n_tiles=8, n_test=3)
    m = build_vigor_manifests(root, gt_ratio=0.0, seed=0)
    _assert_opaque(m)
    counts = m.images.groupby(["split", "view"]).size().to_dict()
    assert counts == {("train", "ground"): 16, ("train", "satellite"): 32, ("test", "ground"): 12,
                      ("test", "satellite"): 32}
    # the same tile file is listed in both splits with two different ids
    sat = m.images[m.images.view == "satellite"]
    assert sat.path.nunique() == 32 and set(sat.groupby("path").split.nunique()) == {2}
    # truth: one positive and three semi-positives per panorama, offsets kept as floats
    assert (m.truth.groupby("ground_id").kind.apply(lambda k: sorted(k)) ==
            [["positive"] + ["semi_positive"] * 3] * 28).all()
    assert m.truth.dx.dtype == np.float64 and m.truth.dy.dtype == np.float64
    path, split, city = (m.images.set_index("image_id")[c] for c in ("path", "split", "city"))
    expected = {(f"{c}/panorama/{r[0]}", f"{c}/satellite/{r[1 + 3 * k]}", "positive" if k == 0 else "semi_positive",
                 r[2 + 3 * k], r[3 + 3 * k]) for c in rows for s in rows[c] for r in rows[c][s] for k in range(4)}
    got = {(path[g], path[s], kind, dx, dy) for g, s, kind, dx, dy in m.truth.itertuples(index=False)}
    assert got == expected
    assert all(split[g] == split[s] and city[g] == city[s] for g, s in zip(m.truth.ground_id, m.truth.satellite_id,
                                                                          strict=True))
    # shared tile: tile 0 of each city is the positive of two train panoramas, i.e. the same satellite id
    pos = m.truth[m.truth.kind == "positive"]
    shared = pos.groupby("satellite_id").size()
    assert (shared >= 2).sum() >= 8  # 4 cities x 2 splits
    # write_manifests keeps the extra columns and always writes skipped.csv
    write_manifests(m, tmp_path / "manifest")
    assert "city" in read_images(tmp_path / "manifest").columns
    assert {"dx", "dy"} <= set(read_truth(tmp_path / "manifest").columns)
    assert (tmp_path / "manifest" / "skipped.csv").read_text().strip() == "file,line,reason"


def test_vigor_labeled_subset_is_per_city(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, n_train={"Chicago": 10, "NewYork": 5, "SanFrancisco": 3, "Seattle": 7})
    m = build_vigor_manifests(root, gt_ratio=0.5, seed=3)
    city = m.images.set_index("image_id").city
    assert m.labeled.ground_id.map(city).value_counts().to_dict() == {"Chicago": 5, "NewYork": 2,
                                                                     "SanFrancisco": 1, "Seattle": 3}
    pos = set(map(tuple, m.truth[m.truth.kind == "positive"][["ground_id", "satellite_id"]].values))
    assert set(map(tuple, m.labeled.values)) <= pos
    assert m.labeled.equals(build_vigor_manifests(root, gt_ratio=0.5, seed=3).labeled)
    assert not m.labeled.equals(build_vigor_manifests(root, gt_ratio=0.5, seed=4).labeled)
    # a city's draw does not depend on which other cities are selected
    only = build_vigor_manifests(root, gt_ratio=0.5, seed=3, cities=("Chicago",))
    chicago = m.labeled[m.labeled.ground_id.map(city) == "Chicago"].reset_index(drop=True)
    assert only.labeled.equals(chicago)


def test_vigor_cross_area_assigns_cities(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, n_tiles=6, n_test=2)
    m = build_vigor_manifests(root, gt_ratio=0.0, seed=0, protocol="cross_area")
    by = m.images.groupby(["split", "view"]).city.apply(lambda c: sorted(set(c))).to_dict()
    assert by[("train", "ground")] == by[("train", "satellite")] == ["NewYork", "Seattle"]
    assert by[("test", "ground")] == by[("test", "satellite")] == ["Chicago", "SanFrancisco"]
    assert ((m.images.split == "train") & (m.images.view == "ground")).sum() == 2 * 6  # all panos of the city
    two = build_vigor_manifests(root, gt_ratio=0.0, seed=0, cities=("Chicago", "NewYork"), protocol="cross_area")
    assert set(two.images.groupby("split").city.apply(lambda c: tuple(sorted(set(c))))) == {("NewYork",),
                                                                                          ("Chicago",)}
    with pytest.raises(ValueError, match="none of the selected cities"):
        build_vigor_manifests(root, gt_ratio=0.0, seed=0, cities=("Chicago",), protocol="cross_area")
    with pytest.raises(ValueError, match="protocol"):
        build_vigor_manifests(root, gt_ratio=0.0, seed=0, protocol="same-area")
    with pytest.raises(ValueError, match="cities"):
        build_vigor_manifests(root, gt_ratio=0.0, seed=0, cities=("Paris",))


def test_vigor_bad_lines_raise_or_skip(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, cities=("Chicago", "Seattle"))
    train = root / "splits" / "Chicago" / "same_area_balanced_train.txt"
    lines = train.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:12])  # line 3: a column lost
    lines[3] = lines[3].replace(lines[3].split()[1], "satellite_0.0_0.0.png")  # line 4: tile not listed
    train.write_text("\n".join(lines) + "\n")
    kw = {"gt_ratio": 0.0, "seed": 0, "cities": ("Chicago", "Seattle")}
    with pytest.raises(ValueError, match=r"same_area_balanced_train\.txt:3: expected 13 .* found 12"):
        build_vigor_manifests(root, **kw)
    m = build_vigor_manifests(root, strict=False, **kw)
    assert m.skipped.line.tolist() == [3, 4]
    assert set(m.skipped.file) == {"splits/Chicago/same_area_balanced_train.txt"}
    assert ((m.images.split == "train") & (m.images.view == "ground")).sum() == 8 - 2
    # a missing tile file drops the tile and every panorama that needs it; a missing panorama drops itself
    (root / "Seattle" / "satellite" / vigor_tile_name(1, 0)).unlink()
    pano = (root / "splits" / "Seattle" / "same_area_balanced_test.txt").read_text().split()[0]
    (root / "Seattle" / "panorama" / pano).unlink()
    with pytest.raises(FileNotFoundError, match=r"Seattle/satellite_list\.txt:1: .*does not exist"):
        build_vigor_manifests(root, **kw)
    m = build_vigor_manifests(root, strict=False, **kw)
    reasons = m.skipped.groupby("file").size().to_dict()
    assert reasons["splits/Seattle/satellite_list.txt"] == 1
    seattle_tiles = m.images[(m.images.city == "Seattle") & (m.images.view == "satellite")]
    assert len(seattle_tiles) == 2 * 7
    # tile 0 was the positive of panoramas 1-2 of both Seattle files (and maybe a semi-positive of others)
    assert reasons["splits/Seattle/same_area_balanced_train.txt"] >= 2
    assert reasons["splits/Seattle/same_area_balanced_test.txt"] >= 2  # incl. the missing panorama
    write_manifests(m, tmp_path / "manifest")
    skipped = pd.read_csv(tmp_path / "manifest" / "skipped.csv")
    assert list(skipped.columns) == ["file", "line", "reason"] and len(skipped) == len(m.skipped)


def test_vigor_empty_split_of_one_city(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, cities=("Chicago", "NewYork"))
    (root / "splits" / "NewYork" / "same_area_balanced_test.txt").write_text("\n")
    kw = {"gt_ratio": 0.0, "seed": 0, "cities": ("Chicago", "NewYork")}
    with pytest.raises(ValueError, match=r"NewYork/same_area_balanced_test\.txt: split file is empty"):
        build_vigor_manifests(root, **kw)
    m = build_vigor_manifests(root, strict=False, **kw)
    assert m.skipped.to_dict("records") == [{"file": "splits/NewYork/same_area_balanced_test.txt", "line": 0,
                                             "reason": "split file is empty"}]
    test_ground = m.images[(m.images.split == "test") & (m.images.view == "ground")]
    assert set(test_ground.city) == {"Chicago"}
    (root / "splits" / "Chicago" / "same_area_balanced_test.txt").write_text("")
    with pytest.raises(ValueError, match=r"no usable pairs left in split\(s\) \['test'\]"):
        build_vigor_manifests(root, strict=False, **kw)


def test_vigor_listing_does_not_depend_on_file_order(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, cities=("Chicago", "Seattle"))
    a = build_vigor_manifests(root, gt_ratio=0.5, seed=1, cities=("Seattle", "Chicago"))
    for f in (root / "splits").glob("*/*.txt"):
        lines = f.read_text().splitlines()
        random.Random(0).shuffle(lines)
        f.write_text("\n".join(lines) + "\n")
    b = build_vigor_manifests(root, gt_ratio=0.5, seed=1, cities=("Chicago", "Seattle"))
    for x, y in ((a.images, b.images), (a.truth, b.truth), (a.labeled, b.labeled)):
        pd.testing.assert_frame_equal(x, y)


# ----------------------------------------------------------------------------------------------------- CVUSA


def test_cvusa_skips_bad_rows_when_not_strict(tmp_path: Path) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=6, n_test=3, pano_hw=(8, 16), tile=8)
    split = root / "splits" / "train-19zl.csv"
    split.write_text(split.read_text() + "bingmap/19/0000099.jpg,streetview/panos/0000099.jpg\n")
    (root / "streetview/panos/0000008.jpg").unlink()  # a test row (line 2 of val-19zl.csv)
    with pytest.raises(ValueError, match=r"train-19zl\.csv:7: expected 3"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0)
    m = build_cvusa_manifests(root, gt_ratio=0.0, seed=0, strict=False)
    assert m.skipped[["file", "line"]].values.tolist() == [["splits/train-19zl.csv", 7],
                                                           ["splits/val-19zl.csv", 2]]
    assert "0000008.jpg does not exist" in m.skipped.reason.iloc[1]
    assert m.images.groupby("split").size().to_dict() == {"train": 12, "test": 4}
    write_manifests(m, tmp_path / "manifest")
    assert len(pd.read_csv(tmp_path / "manifest" / "skipped.csv")) == 2
    # the old 4-argument call still works (and is strict)
    with pytest.raises(ValueError, match="expected 3"):
        build_cvusa_manifests(root, 0.0, 0, True)
    assert len(build_cvusa_manifests(root, 0.0, 0, False, strict=False).images) == 18


def test_cvusa_empty_split(tmp_path: Path) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=3, n_test=2, pano_hw=(8, 16), tile=8)
    (root / "splits" / "val-19zl.csv").write_text("\n")
    with pytest.raises(ValueError, match=r"val-19zl\.csv: split file is empty"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0)
    with pytest.raises(ValueError, match="no usable pairs left"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0, strict=False)


def test_truncated_or_garbage_images_only_caught_with_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=4, n_test=2, pano_hw=(64, 128), tile=8)
    pano = root / "streetview/panos/0000002.jpg"
    pano.write_bytes(pano.read_bytes()[:-40])  # cut inside the scan data: PIL's verify() alone passes this
    (root / "bingmap/19/0000005.jpg").write_bytes(b"\x00garbage" * 8)
    # listing never opens an image unless asked to
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("listing decoded an image"))
    assert len(build_cvusa_manifests(root, gt_ratio=0.0, seed=0).images) == 12
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"train-19zl\.csv:2: .*0000002\.jpg is unreadable \(truncated JPEG"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0, verify_images=True)
    m = build_cvusa_manifests(root, gt_ratio=0.0, seed=0, verify_images=True, strict=False)
    assert m.skipped[["file", "line"]].values.tolist() == [["splits/train-19zl.csv", 2],
                                                           ["splits/val-19zl.csv", 1]]
    assert len(m.images) == 8
    # CVACT takes the same flag
    act = tmp_path / "CVACT"
    ids = write_cvact_fixture(act)
    (act / "satview_polish" / f"{ids['test'][0]}_satView_polish.jpg").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"ACT_data\.mat:1: .*is unreadable"):
        build_cvact_manifests(act, gt_ratio=0.0, seed=0, verify_images=True)


def test_repeated_image_is_a_bad_row(tmp_path: Path) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=3, n_test=2, pano_hw=(8, 16), tile=8)
    val = root / "splits" / "val-19zl.csv"
    val.write_text(val.read_text() + (root / "splits" / "train-19zl.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"val-19zl\.csv:3: .*already listed in split train at .*train-19zl\.csv:1"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0)
    m = build_cvusa_manifests(root, gt_ratio=0.0, seed=0, strict=False)
    assert len(m.skipped) == 1 and m.images.image_id.is_unique


# ----------------------------------------------------------------------------------------------- coordinates

#: UTM zone 55 south grid position of (45 S, 147 E), on the central meridian: northing = 10,000 km minus the
#: scaled meridian arc (0.9996 x 4,984,944.378 m from the equator to 45 degrees on WGS84).
S45_E147_UTM = (500_000.0, 10_000_000.0 - 0.9996 * 4_984_944.378)


def _written_images(m: Manifests, out: Path) -> pd.DataFrame:
    write_manifests(m, out)
    images = read_images(out)
    assert list(images.columns[:6]) == ["image_id", "view", "split", "path", "lat", "lon"]
    assert images.lat.dtype == np.float64 and images.lon.dtype == np.float64
    return images


def test_cvact_coordinates_are_the_converted_utm(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    split_ids = write_cvact_fixture(root)
    mat = sio.loadmat(root / "ACT_data.mat", squeeze_me=True, struct_as_record=False)
    ids = [str(s).strip() for s in mat["panoIds"]]
    known = split_ids["train"][0]
    mat = sio.loadmat(root / "ACT_data.mat")
    mat["utm"][ids.index(known)] = S45_E147_UTM
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in mat.items() if not k.startswith("__")})
    m = build_cvact_manifests(root, gt_ratio=0.0, seed=0)
    images = _written_images(m, tmp_path / "manifest").set_index("path")
    ground = images.loc[f"streetview/{known}_grdView.jpg"]
    assert ground.lat == pytest.approx(-45.0, abs=1e-8) and ground.lon == pytest.approx(147.0, abs=1e-8)
    # every image is placed, around Canberra, and a tile shares its panorama's location
    assert images.lat.notna().all() and images.lon.notna().all()
    others = images.drop([ground.name, f"satview_polish/{known}_satView_polish.jpg"])
    assert others.lat.between(-35.4, -35.2).all() and others.lon.between(149.0, 149.2).all()
    for pid in split_ids["train"] + split_ids["test"]:
        g, s = images.loc[f"streetview/{pid}_grdView.jpg"], images.loc[f"satview_polish/{pid}_satView_polish.jpg"]
        assert (g.lat, g.lon) == (s.lat, s.lon)
    # grid metres are ground metres (UTM scale ~1.00005 here), up to the sphere's haversine vs the ellipsoid (<0.5 %)
    a, b = (m.images.set_index("path").loc[f"streetview/{p}_grdView.jpg"] for p in split_ids["test"][:2])
    utm = {p: mat["utm"][ids.index(p)] for p in split_ids["test"][:2]}
    grid = float(np.hypot(*(utm[split_ids["test"][0]] - utm[split_ids["test"][1]])))
    assert haversine_m(a.lat, a.lon, b.lat, b.lon) == pytest.approx(grid, rel=5e-3)
    # the zone is a parameter: one zone east moves the same grid numbers 6 degrees east
    east = build_cvact_manifests(root, gt_ratio=0.0, seed=0, utm_zone=56).images.set_index("path")
    assert east.loc[ground.name].lon == pytest.approx(153.0, abs=1e-8)
    north = build_cvact_manifests(root, gt_ratio=0.0, seed=0, utm_south=False).images.set_index("path")
    assert north.loc[ground.name].lon == pytest.approx(147.0, abs=1e-8) and (north.lat > 0).all()


def test_cvact_utm_absent_or_misshapen(tmp_path: Path) -> None:
    root = tmp_path / "CVACT"
    write_cvact_fixture(root)
    mat = sio.loadmat(root / "ACT_data.mat")
    fields = {k: v for k, v in mat.items() if not k.startswith("__")}
    sio.savemat(root / "ACT_data.mat", {**fields, "utm": fields["utm"][:-1]})
    for strict in (True, False):  # a shifted matrix would misplace every image: never skipped
        with pytest.raises(ValueError, match=r"ACT_data\.mat: field 'utm' has shape \(10, 2\), expected \(11, 2\)"):
            build_cvact_manifests(root, gt_ratio=0.0, seed=0, strict=strict)
    sio.savemat(root / "ACT_data.mat", {k: v for k, v in fields.items() if k != "utm"})
    images = _written_images(build_cvact_manifests(root, gt_ratio=0.0, seed=0), tmp_path / "manifest")
    assert len(images) == 18 and images.lat.isna().all() and images.lon.isna().all()


def test_vigor_coordinates_are_the_ones_in_the_names(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    rows = write_vigor_fixture(root, cities=("Chicago", "Seattle"), n_tiles=5)
    m = build_vigor_manifests(root, gt_ratio=0.0, seed=0, cities=("Chicago", "Seattle"))
    images = _written_images(m, tmp_path / "manifest")
    assert list(images.columns) == ["image_id", "view", "split", "path", "lat", "lon", "city"]
    # the fixture writes tile k of city i at (40+i).00000k, -(80+i).00000k, panorama j at the same with j
    expected = {}
    for ci, city in enumerate(rows):
        expected |= {f"{city}/satellite/{vigor_tile_name(ci, k)}": (40 + ci + k * 1e-6, -80 - ci - k * 1e-6)
                     for k in range(5)}
        expected |= {f"{city}/panorama/{r[0]}": (40 + ci + j * 1e-6, -80 - ci - j * 1e-6)
                     for s in rows[city].values() for j, r in enumerate(s)}
    got = {p: (la, lo) for p, la, lo in zip(images.path, images.lat, images.lon, strict=True)}
    assert got.keys() == expected.keys()
    assert all(np.allclose(got[p], expected[p], rtol=0, atol=1e-9) for p in got)
    assert m.images.lat.dtype == np.float64  # in memory too, not only once written


def test_vigor_malformed_coordinates_are_bad_entries(tmp_path: Path) -> None:
    root = tmp_path / "VIGOR"
    write_vigor_fixture(root, cities=("Chicago",), n_tiles=40, n_test=6)
    kw = {"gt_ratio": 0.0, "seed": 0, "cities": ("Chicago",)}
    train = root / "splits" / "Chicago" / "same_area_balanced_train.txt"
    lines = train.read_text().splitlines()
    pano = lines[2].split()[0]
    broken = pano.replace(",40.", ",4O.")  # letter O for zero
    (root / "Chicago" / "panorama" / pano).rename(root / "Chicago" / "panorama" / broken)
    lines[2] = lines[2].replace(pano, broken)
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"same_area_balanced_train\.txt:3: panorama name {re.escape(broken)}: "
                                         r"coordinates '4O\.000002', '-80\.000002' are not numbers"):
        build_vigor_manifests(root, **kw)
    m = build_vigor_manifests(root, strict=False, **kw)
    assert m.skipped[["file", "line"]].values.tolist() == [["splits/Chicago/same_area_balanced_train.txt", 3]]
    assert broken not in set(m.images.path.str.rsplit("/", n=1).str[-1])
    # a tile name without coordinates, and one out of range: the tile goes, and every panorama that needs it
    sat_list = root / "splits" / "Chicago" / "satellite_list.txt"
    tiles = sat_list.read_text().split()
    for k, name in ((1, "satellite_41.5.png"), (2, "satellite_95.0_-80.0.png")):
        (root / "Chicago" / "satellite" / tiles[k]).rename(root / "Chicago" / "satellite" / name)
        for f in (root / "splits" / "Chicago").glob("*.txt"):
            f.write_text(f.read_text().replace(tiles[k], name))
    with pytest.raises(ValueError, match=r"satellite_list\.txt:2: tile name satellite_41\.5\.png is not "
                                         r"satellite_<lat>_<lon>\.png"):
        build_vigor_manifests(root, **kw)
    m = build_vigor_manifests(root, strict=False, **kw)
    bad_tiles = m.skipped[m.skipped.file == "splits/Chicago/satellite_list.txt"]
    assert bad_tiles.line.tolist() == [2, 3] and "is not a latitude in [-90, 90]" in bad_tiles.reason.iloc[1]
    assert not m.images.path.str.contains("satellite_41.5.png|satellite_95.0", regex=True).any()
    assert m.images.lat.notna().all()


def _write_gps_table(root: Path, n: int) -> list[tuple[float, float, float, float]]:
    """CVUSA's split_locations/all.csv for ids 1..n: satellite lat, lon, ground lat, lon, and a fifth field."""
    rows = [(38.0 + i / 1000, -97.0 - i / 1000, 38.0 + i / 1000 + 1e-5, -97.0 - i / 1000 - 2e-5) for i in range(n)]
    (root / "split_locations").mkdir(exist_ok=True)
    (root / "split_locations" / "all.csv").write_text("".join(",".join(map(str, r)) + ",0\n" for r in rows))
    return rows


def test_cvusa_coordinates_are_nan_without_the_gps_table(tmp_path: Path) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=3, n_test=2, pano_hw=(8, 16), tile=8)
    m = build_cvusa_manifests(root, gt_ratio=0.0, seed=0)
    assert m.images.lat.isna().all() and m.images.lon.isna().all() and m.images.lat.dtype == np.float64
    images = _written_images(m, tmp_path / "manifest")
    assert images.lat.isna().all() and images.lon.isna().all()
    # no coordinates given at all (a hand-made Manifests): write_manifests still writes the columns, as NaN
    bare = Manifests(m.images.drop(columns=["lat", "lon"]), m.truth, m.labeled)
    assert _written_images(bare, tmp_path / "bare").equals(images)
    written = [(tmp_path / d / "images.parquet").read_bytes() for d in ("bare", "manifest")]
    assert written[0] == written[1]


def test_cvusa_coordinates_from_the_gps_table(tmp_path: Path) -> None:
    root = tmp_path / "CVUSA"
    write_cvusa_fixture(root, n_train=3, n_test=2, pano_hw=(8, 16), tile=8)
    gps = _write_gps_table(root, 5)
    images = _written_images(build_cvusa_manifests(root, gt_ratio=0.0, seed=0), tmp_path / "manifest")
    for path, lat, lon in zip(images.path, images.lat, images.lon, strict=True):
        s_lat, s_lon, g_lat, g_lon = gps[int(Path(path).stem) - 1]  # row = id - 1
        assert (lat, lon) == ((s_lat, s_lon) if path.startswith("bingmap/") else (g_lat, g_lon))
    # a row that does not parse, and an id past the table's end: bad entries, named by file and line
    table = root / "split_locations" / "all.csv"
    lines = table.read_text().splitlines()
    lines[1] = "38.1,not-a-number,38.1,-97.1,0"
    table.write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(ValueError, match=r"all\.csv:2: coordinates .* are not numbers \(the coordinates of "
                                         r"bingmap/19/0000002\.jpg, listed at train-19zl\.csv:2\)"):
        build_cvusa_manifests(root, gt_ratio=0.0, seed=0)
    m = build_cvusa_manifests(root, gt_ratio=0.0, seed=0, strict=False)
    assert m.skipped[["file", "line"]].values.tolist() == [["split_locations/all.csv", 2],
                                                           ["splits/val-19zl.csv", 2]]
    assert "id 5 of bingmap/19/0000005.jpg has no row in split_locations/all.csv (4 rows)" in m.skipped.reason.iloc[1]
    assert len(m.images) == 6 and m.images.lat.notna().all()
