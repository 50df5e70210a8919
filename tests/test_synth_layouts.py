"""The synthetic world written in the CVACT and VIGOR layouts is read by the matching adapters, coordinates
included; the CVUSA output of the default layout is unchanged."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

from cvgl.data.cvact import build_cvact_manifests
from cvgl.data.cvusa import build_cvusa_manifests
from cvgl.data.vigor import build_vigor_manifests
from cvgl.geo import haversine_m
from cvgl.geometry import project_to_bev
from cvgl.synth import LAYOUTS, SynthConfig, synth_config_from_dict, write_synthetic, write_synthetic_cvusa
from cvgl.synth import vigor as vigor_writer
from cvgl.synth.cvusa import ORIGIN_LAT, ORIGIN_LON
from cvgl.synth.dataset import LAYOUT_WRITERS
from cvgl.synth.locations import METRES_PER_DEG_LAT
from cvgl.synth.render import RenderSpec, ground_pyramid, render_panorama, render_tile
from cvgl.synth.vigor import VIGOR_ANCHORS, vigor_tiles_of
from cvgl.synth.world import flat_world, value_noise

TINY = SynthConfig(train_locations=5, test_locations=3, tile_size=32, pano_width=64)
CVACT = dataclasses.replace(TINY, layout="cvact")
VIGOR = dataclasses.replace(TINY, layout="vigor", train_locations=4)
CITIES = ("Chicago", "NewYork")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _paths(m) -> dict[str, str]:
    return m.images.set_index("image_id").path.to_dict()


@pytest.fixture(scope="module")
def cvact(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "CVACT"
    write_synthetic(CVACT, root, seed=7, progress=False)
    return root


@pytest.fixture(scope="module")
def vigor(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "VIGOR"
    write_synthetic(VIGOR, root, seed=7, progress=False)
    return root


@pytest.mark.parametrize("layout", ["cvact", "vigor"])
def test_the_manifest_stage_reads_the_world_in_the_layout_it_was_written_in(layout, cvact, vigor, tmp_path):
    """As the Snakefile's manifest rule calls it (dataset.name synth, the world's synth.layout): the layout's
    adapter lists the world, with coordinates, gt_ratio's labeled pairs and, for VIGOR, its semi-positives."""
    import pandas as pd

    from cvgl.data.stages import manifest_stage

    root = cvact if layout == "cvact" else vigor
    manifest_stage({"name": "synth", "layout": layout}, root, 0.5, 0, tmp_path / "manifest")
    images = pd.read_parquet(tmp_path / "manifest" / "images.parquet")
    truth = pd.read_parquet(tmp_path / "manifest" / "truth.parquet")
    assert images[["lat", "lon"]].notna().all().all()
    assert len(pd.read_parquet(tmp_path / "manifest" / "labeled.parquet")) >= 2
    assert (truth.kind == "semi_positive").any() == (layout == "vigor")


# ----------------------------------------------------------------------------------------------------- CVACT


def test_cvact_layout_is_read_by_the_adapter(cvact):
    m = build_cvact_manifests(cvact, gt_ratio=0.4, seed=0, verify_images=True)
    assert m.skipped.empty
    counts = m.images.groupby(["split", "view"]).size().to_dict()
    assert counts == {("train", "ground"): 5, ("train", "satellite"): 5, ("test", "ground"): 3,
                      ("test", "satellite"): 3}
    assert len(m.truth) == 8 and set(m.truth.kind) == {"positive"} and len(m.labeled) == 2
    path = _paths(m)
    for g, s in zip(m.truth.ground_id, m.truth.satellite_id, strict=True):
        pid = re.fullmatch(r"streetview/([A-Za-z0-9_-]{22})_grdView\.jpg", path[g]).group(1)
        assert path[s] == f"satview_polish/{pid}_satView_polish.jpg"
        pano, tile = Image.open(cvact / path[g]), Image.open(cvact / path[s])
        assert pano.format == tile.format == "JPEG"
        assert pano.size == (64, 32) and tile.size == (32, 32)  # full 2:1 panorama, square tile


def test_cvact_mat_has_the_release_structure(cvact):
    mat = sio.loadmat(cvact / "ACT_data.mat", squeeze_me=True, struct_as_record=False)
    ids = [str(s) for s in mat["panoIds"]]
    assert len(ids) == len(set(ids)) == 8 and all(re.fullmatch(r"[A-Za-z0-9_-]{22}", s) for s in ids)
    assert mat["trainSet"]._fieldnames[1] == "trainInd" and mat["valSet"]._fieldnames[1] == "valInd"
    train, val = mat["trainSet"].trainInd, mat["valSet"].valInd
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1, 9))  # 1-based, disjoint, complete
    assert (np.diff(train) > 0).all() and mat["trainSet"].trainNum == 5 and mat["valSet"].valNum == 3
    assert mat["utm"].shape == (8, 2)
    with (cvact / "locations.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["pano_id"] for r in rows] == ids  # in panoIds order
    xy = np.array([[float(r["x_m"]), float(r["y_m"])] for r in rows])
    assert np.allclose(mat["utm"] - xy, mat["utm"][0] - xy[0], atol=0.01)  # utm = origin + metric position
    split = np.array([r["split"] for r in rows])
    assert (split[train.astype(int) - 1] == "train").all() and (split[val.astype(int) - 1] == "test").all()
    gap = np.linalg.norm(xy[split == "train"][:, None] - xy[split == "test"][None], axis=-1).min()
    assert gap > 2 * CVACT.tile_half_extent_m  # train and test worlds are disjoint


def test_cvact_coordinates_read_back_from_utm(cvact):
    """The synthetic `utm` (Canberra, zone 55 south) comes back as lat/lon whose distances are the world's metres;
    a tile sits exactly on its panorama."""
    m = build_cvact_manifests(cvact, gt_ratio=0.0, seed=0)
    images = m.images.set_index("image_id")
    assert images.lat.notna().all() and images.lat.between(-35.5, -35.0).all() and images.lon.between(149, 149.4).all()
    g, s = images.loc[m.truth.ground_id], images.loc[m.truth.satellite_id]
    assert np.array_equal(g.lat, s.lat) and np.array_equal(g.lon, s.lon)
    with (cvact / "locations.csv").open() as fh:
        xy = {r["pano_id"]: (float(r["x_m"]), float(r["y_m"])) for r in csv.DictReader(fh)}
    pos = np.array([xy[re.search(r"/(.+)_grdView", p).group(1)] for p in g.path])
    metric = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    great_circle = haversine_m(g.lat.to_numpy()[:, None], g.lon.to_numpy()[:, None], g.lat.to_numpy()[None],
                               g.lon.to_numpy()[None])
    assert metric.max() > 100 and np.allclose(great_circle, metric, rtol=5e-3, atol=0.5)


# ----------------------------------------------------------------------------------------------------- VIGOR


def _latlon(name: str) -> tuple[float, float]:
    """Lat/lon in a VIGOR tile name or panorama name."""
    if name.startswith("satellite_"):
        lat, lon = name[len("satellite_"): -len(".png")].split("_")
    else:
        _, lat, lon, _ = name.split(",")
    return float(lat), float(lon)


@pytest.mark.parametrize("protocol", ["same_area", "cross_area"])
def test_vigor_layout_is_read_by_the_adapter(vigor, protocol):
    m = build_vigor_manifests(vigor, gt_ratio=0.5, seed=0, cities=CITIES, protocol=protocol, verify_images=True)
    assert m.skipped.empty
    ground = m.images[m.images.view == "ground"]
    n_tiles = {c: len((vigor / "splits" / c / "satellite_list.txt").read_text().split()) for c in CITIES}
    if protocol == "same_area":  # train_locations / test_locations panoramas per city
        assert ground.groupby(["split", "city"]).size().to_dict() == {
            ("train", "Chicago"): 4, ("train", "NewYork"): 4, ("test", "Chicago"): 3, ("test", "NewYork"): 3}
        assert (m.images.view == "satellite").sum() == 2 * sum(n_tiles.values())
    else:  # NewYork trains, Chicago tests, all panoramas of the city
        assert ground.groupby(["split", "city"]).size().to_dict() == {("train", "NewYork"): 7,
                                                                      ("test", "Chicago"): 7}
    # one positive and three distinct semi-positives per panorama, all files present
    kinds = m.truth.groupby("ground_id").kind.apply(sorted)
    assert len(kinds) == 14 and all(k == ["positive"] + ["semi_positive"] * 3 for k in kinds)
    path = _paths(m)
    assert all((vigor / path[i]).is_file() for i in set(m.truth.ground_id) | set(m.truth.satellite_id))
    # tiles shared by several panoramas (as semi-positives at least)
    assert m.truth.groupby("satellite_id").size().max() >= 2
    tile = Image.open(vigor / path[m.truth.satellite_id[0]])
    pano = Image.open(vigor / path[m.truth.ground_id[0]])
    assert tile.format == "PNG" and tile.size == (32, 32) and pano.format == "JPEG" and pano.size == (64, 32)


def test_vigor_split_files_and_offsets(vigor):
    size = VIGOR.tile_size
    m_per_px = 2 * VIGOR.tile_half_extent_m / size
    for city in CITIES:
        split = vigor / "splits" / city
        listed = split.joinpath("satellite_list.txt").read_text().split()
        assert sorted(listed) == sorted(p.name for p in (vigor / city / "satellite").iterdir())
        lines = {name: split.joinpath(name).read_text().splitlines()
                 for name in ("same_area_balanced_train.txt", "same_area_balanced_test.txt", "pano_label_balanced.txt")}
        train, test, every = lines.values()
        assert len(train) == 4 and len(test) == 3 and not set(train) & set(test)
        assert sorted(train + test) == sorted(every)
        lat0, lon0 = VIGOR_ANCHORS[city]
        m_per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(lat0))
        for line in every:
            fields = line.split()
            assert len(fields) == 13
            plat, plon = _latlon(fields[0])
            tiles = [(fields[c], float(fields[c + 1]), float(fields[c + 2])) for c in (1, 4, 7, 10)]
            assert len({t for t, _, _ in tiles}) == 4 and all(t in listed for t, _, _ in tiles)
            for k, (name, d0, d1) in enumerate(tiles):
                tlat, tlon = _latlon(name)
                # d0 = (north_tile - north_pano) px, d1 = (east_tile - east_pano) px, like VIGOR's files
                assert d0 == pytest.approx((tlat - plat) * METRES_PER_DEG_LAT / m_per_px, abs=0.2)
                assert d1 == pytest.approx((tlon - plon) * m_per_deg_lon / m_per_px, abs=0.2)
                limit = size / 4 if k == 0 else size / 2  # positive: central quarter; semi: anywhere inside
                assert abs(d0) <= limit + 0.05 and abs(d1) <= limit + 0.05
            dist = [math.hypot(d0, d1) for _, d0, d1 in tiles[1:]]
            assert dist == sorted(dist)


def test_vigor_coordinates_read_back_from_the_names(vigor):
    """Each panorama is as far from each of its tiles' centres as the label's pixel offset says: within a quarter
    tile per axis of its positive, half a tile per axis of a semi-positive."""
    m = build_vigor_manifests(vigor, gt_ratio=0.0, seed=0, cities=CITIES)
    images = m.images.set_index("image_id")
    assert images.lat.notna().all() and images.lon.notna().all()
    for city, (lat0, lon0) in VIGOR_ANCHORS.items():
        if city in CITIES:
            here = images[images.city == city]
            assert (haversine_m(here.lat, here.lon, lat0, lon0) < 5_000).all()  # around the real city centre
    g, s = images.loc[m.truth.ground_id], images.loc[m.truth.satellite_id]
    dist = haversine_m(g.lat.to_numpy(), g.lon.to_numpy(), s.lat.to_numpy(), s.lon.to_numpy())
    m_per_px = 2 * VIGOR.tile_half_extent_m / VIGOR.tile_size
    offset_m = m_per_px * np.hypot(m.truth.dx, m.truth.dy).to_numpy()
    assert np.allclose(dist, offset_m, rtol=1e-2, atol=0.5)
    stride = VIGOR.tile_half_extent_m  # tile side / 2
    positive = (m.truth.kind == "positive").to_numpy()
    assert (dist[positive] <= stride / math.sqrt(2) * 1.01 + 0.5).all()
    assert (dist[~positive] <= stride * math.sqrt(2) * 1.01 + 0.5).all() and dist[~positive].max() > stride / 2


def test_vigor_tiles_of_a_point():
    stride = 10.0
    assert vigor_tiles_of(12.0, 26.0, stride) == [(1, 3), (1, 2), (2, 3), (2, 2)]
    assert vigor_tiles_of(-4.0, 0.0, stride)[0] == (0, 0)


# ------------------------------------------------------------------------------------------ all layouts


@pytest.mark.parametrize("workers", [1, 2], ids=["serial", "two-workers"])
@pytest.mark.parametrize("cfg", [CVACT, VIGOR], ids=["cvact", "vigor"])
def test_same_seed_same_bytes(cfg, workers, cvact, vigor, tmp_path):
    """The fixtures render in this process; again, serially or on two worker processes, gives the same bytes."""
    again = tmp_path / "again"
    write_synthetic(cfg, again, seed=7, progress=False, workers=workers)
    assert _files(again) == _files(cvact if cfg.layout == "cvact" else vigor)
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.old-*"))


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(vigor_writer, "render_panorama", crash)
    with pytest.raises(RuntimeError, match="boom"):
        write_synthetic(VIGOR, tmp_path / "VIGOR", seed=7, progress=False)
    assert not list(tmp_path.iterdir())


def test_cvusa_output_is_unchanged(tmp_path):
    """The default layout writes exactly what write_synthetic_cvusa wrote before the layout knob existed."""
    cfg = SynthConfig(train_locations=3, test_locations=2, tile_size=32, pano_width=64)
    write_synthetic(cfg, tmp_path / "a", seed=0, progress=False)
    write_synthetic_cvusa(dataclasses.replace(cfg, layout="vigor"), tmp_path / "b", seed=0, progress=False)
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b")
    ids = [f"{i:07d}" for i in range(1, 6)]
    assert sorted(a) == sorted([f"bingmap/19/{i}.jpg" for i in ids] + [f"streetview/panos/{i}.jpg" for i in ids]
                               + ["locations.csv", "preview_test.png", "preview_train.png", "split_locations/all.csv",
                                  "splits/train-19zl.csv", "splits/val-19zl.csv", "world.json"])
    assert [r.split(",")[0] for r in a["splits/train-19zl.csv"].decode().splitlines()] == \
        ["bingmap/19/0000005.jpg", "bingmap/19/0000002.jpg", "bingmap/19/0000003.jpg"]
    assert [r.split(",")[0] for r in a["splits/val-19zl.csv"].decode().splitlines()] == \
        ["bingmap/19/0000001.jpg", "bingmap/19/0000004.jpg"]
    assert Image.open(tmp_path / "a" / "streetview/panos/0000001.jpg").size == (64, round(64 * 224 / 1232))
    config = json.loads(a["world.json"])["config"]
    assert "layout" not in config and "vigor_cities" not in config and list(config)[-1] == "jpeg_quality"


def test_cvusa_coordinates_read_back_from_the_gps_table(tmp_path):
    """The CVUSA layout's split_locations/all.csv reaches the manifest: distances are the world's metres."""
    cfg = SynthConfig(train_locations=3, test_locations=2, tile_size=32, pano_width=64)
    write_synthetic(cfg, tmp_path / "CVUSA", seed=0, progress=False)
    m = build_cvusa_manifests(tmp_path / "CVUSA", gt_ratio=0.0, seed=0)
    images = m.images.set_index("image_id")
    assert (haversine_m(images.lat, images.lon, ORIGIN_LAT, ORIGIN_LON) < 20_000).all()
    g, s = images.loc[m.truth.ground_id], images.loc[m.truth.satellite_id]
    assert np.array_equal(g.lat, s.lat) and np.array_equal(g.lon, s.lon)
    with (tmp_path / "CVUSA" / "locations.csv").open() as fh:
        xy = {int(r["id"]): (float(r["x_m"]), float(r["y_m"])) for r in csv.DictReader(fh)}
    pos = np.array([xy[int(Path(p).stem)] for p in g.path])
    metric = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    great_circle = haversine_m(g.lat.to_numpy()[:, None], g.lon.to_numpy()[:, None], g.lat.to_numpy()[None],
                               g.lon.to_numpy()[None])
    assert metric.max() > 100 and np.allclose(great_circle, metric, rtol=5e-3, atol=0.5)


def test_layout_config_knobs():
    cfg = synth_config_from_dict({"layout": "vigor", "vigor_cities": ["Seattle", "Chicago"], "pano_width": 96})
    assert cfg.vigor_cities == ("Seattle", "Chicago") and cfg.pano_height == 48
    assert SynthConfig().layout == "cvusa" and SynthConfig().pano_height == 93
    assert tuple(LAYOUT_WRITERS) == LAYOUTS  # every layout the config accepts has a writer
    assert SynthConfig().vigor_cities == CITIES
    assert synth_config_from_dict({"layout": "cvact"}).render_spec().band is False
    assert SynthConfig().render_spec().band is True
    with pytest.raises(ValueError, match=r"synth\.layout"):
        synth_config_from_dict({"layout": "kitti"})
    with pytest.raises(ValueError, match=r"synth\.vigor_cities"):
        synth_config_from_dict({"vigor_cities": ["Paris"]})
    with pytest.raises(ValueError, match=r"synth\.vigor_cities"):
        synth_config_from_dict({"vigor_cities": ["Chicago", "Chicago"]})
    with pytest.raises(ValueError, match=r"synth\.pano_width must be even"):
        synth_config_from_dict({"layout": "cvact", "pano_width": 65})


def test_full_panorama_of_a_flat_world_projects_to_its_tile():
    """A 2:1 panorama (rows -90..+90 degrees) projected with band=False is the tile, down to the nadir."""
    rng = np.random.default_rng(3)
    ground = np.clip(np.stack([128 + 45 * value_noise(rng, (800, 800), 24) for _ in range(3)], -1), 0, 255)
    world = flat_world(ground.astype(np.uint8), resolution=0.5)
    spec = RenderSpec(tile_size=128, pano_width=512, pano_height=256, band=False, styled=False)
    pano = render_panorama(world, ground_pyramid(world), 200.0, 200.0, spec, rng)
    assert pano.shape == (256, 512, 3) and np.isfinite(pano).all()
    bev = project_to_bev(torch.from_numpy(pano).permute(2, 0, 1)[None].float(), 128, 175.0, band=False)
    bev = bev[0].permute(1, 2, 0).numpy()
    idx = np.arange(128) - 64
    near = np.hypot(idx[:, None], idx[None, :]) < 32  # includes the centre: no black disc for full panoramas
    error = np.abs(bev - render_tile(world, 200.0, 200.0, spec, rng)).mean(-1)[near].mean()
    other = np.abs(bev - render_tile(world, 260.0, 160.0, spec, rng)).mean(-1)[near].mean()
    assert error < 1.0 and other > 30 * error
