"""The synthetic world written in the CVACT and VIGOR layouts (docs/method.md §1.2, §1.3).

Both layouts use full 2:1 equirectangular panoramas (``pano_width`` x ``pano_width / 2``, rows from the zenith
to the nadir, centre column north like CVUSA) and north-up tiles of ``tile_size`` pixels spanning the BEV
extent (``SynthConfig.tile_half_extent_m``). Called through ``cvgl.data.synth.write_synthetic``, which writes
into a temporary directory and renames it; same config and seed give byte-identical files.

CVACT (``layout: cvact``), read by :mod:`cvgl.data.cvact`::

    ACT_data.mat                                 panoIds (N x 22 char matrix), trainSet.{trainNum, trainInd},
                                                 valSet.{valNum, valInd} (1-based double column vectors,
                                                 ascending like MATLAB's find()), utm (N x 2 easting, northing)
    streetview/<id>_grdView.jpg                  full panorama
    satview_polish/<id>_satView_polish.jpg       north-up tile centred on the panorama (GPS jitter as CVUSA)
    locations.csv, world.json, preview_{train,test}.png

Train (``train_locations``) and val = test (``test_locations``) come from two disjoint worlds exactly as in
the CVUSA writer (same sub-seeds and side-by-side global frame). Ids are 22 url-safe random characters
(like the release's panoIds); panoIds lists all ids in a random order, so neither an id nor its index tells
the split. ``utm`` = a made-up UTM origin + the global metric position.

VIGOR (``layout: vigor``), read by :mod:`cvgl.data.vigor`::

    splits/<City>/satellite_list.txt             every tile of the city, one name per line
    splits/<City>/same_area_balanced_{train,test}.txt, pano_label_balanced.txt
                                                 13 columns: pano pos d0 d1 semi1 d0 d1 semi2 d0 d1 semi3 d0 d1
    <City>/satellite/satellite_<lat>_<lon>.png   tiles on a regular grid, stride = half the tile side
    <City>/panorama/<id>,<lat>,<lon>,.jpg        full panorama
    locations.csv, world.json, preview_<City>.png

* One world per city of ``vigor_cities`` (an independent area with its own sub-seed; lat/lon anchored at the
  real city centre). Each city has ``train_locations + test_locations`` panoramas sampled along roads; a
  random ``train_locations`` of them form ``same_area_balanced_train.txt`` and the rest
  ``same_area_balanced_test.txt`` (same-area protocol: one area, random split); ``pano_label_balanced.txt``
  lists all of them (cross-area protocol: the whole city is train or test).
* Tiles: the grid (in the city's metric frame, origin at the world corner) covers the panoramas' bounding
  box plus one stride on each side, so every panorama has its four overlapping tiles, and tiles without any
  panorama are distractors as in VIGOR. Tile names carry the lat/lon of the tile centre (Python float repr).
* Each panorama lies in exactly four tiles: the positive is the grid tile whose central quarter (|offset| <=
  stride / 2 on both axes) contains it; the semi-positives are the three others, ordered by distance from the
  panorama to the tile centre (nearest first; the diagonal neighbour is always last), as in the release.
* Offsets follow the real files (checked against released label lines): ``d0 = (north_tile - north_pano) /
  m_per_px`` and ``d1 = (east_tile - east_pano) / m_per_px``, i.e. tile centre minus panorama in (lat, lon)
  order, in tile pixels. The panorama is at pixel (row, col) = (S/2 + d0, S/2 - d1) of the S x S tile,
  S/2 being the renderer's centre pixel. Written with one decimal (the release writes whole pixels as "23.0").
  The tile content is shifted by the renderer's GPS jitter (``sat_offset_m``), which the labels ignore.
"""

from __future__ import annotations

import csv
import io
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from cvgl.geometry import to_uint8
from cvgl.synth.cvusa import (
    METRES_PER_DEG_LAT,
    SynthConfig,
    _border_m,
    _Progress,
    _save_jpeg,
    _save_preview,
    _world_with_locations,
    cache_before_fork,
    config_dict,
    map_in_order,
    render_location,
)
from cvgl.synth.render import GroundMipmap, RenderSpec, ground_pyramid, render_panorama, render_tile
from cvgl.synth.world import World

#: Characters of the synthetic pano ids (url-safe base64, like Google Street View pano ids).
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
ID_LENGTH = 22
#: Made-up UTM origin of the CVACT global frame (around Canberra, zone 55H, where CVACT was captured).
CVACT_UTM_ORIGIN = (690_000.0, 6_090_000.0)
#: Lat/lon of the origin (world corner) of each synthetic VIGOR city (the real city centres).
VIGOR_ANCHORS = {"Chicago": (41.8781, -87.6298), "NewYork": (40.7128, -74.0060),
                 "SanFrancisco": (37.7749, -122.4194), "Seattle": (47.6062, -122.3321)}
#: MAT-file header text (scipy writes the creation time, which would break byte-identical outputs).
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: cvgl.data.synth (synthetic CVACT)"


def random_ids(rng: np.random.Generator, n: int, taken: set[str] | None = None) -> list[str]:
    """``n`` distinct opaque ids of 22 url-safe characters (not in ``taken``)."""
    taken = set() if taken is None else taken
    out: list[str] = []
    while len(out) < n:
        for chars in rng.integers(0, len(ID_ALPHABET), size=(n - len(out), ID_LENGTH)):
            pid = "".join(ID_ALPHABET[chars])
            if pid not in taken:
                taken.add(pid)
                out.append(pid)
    return out


def _seeds(seed: int, n_worlds: int) -> tuple[np.ndarray, int, np.random.Generator]:
    """World sub-seeds and render seed drawn as the CVUSA writer does, and the generator for the rest."""
    root_rng = np.random.default_rng(seed)
    world_seeds = root_rng.integers(0, 2**63 - 1, size=n_worlds)
    render_seed = int(root_rng.integers(0, 2**63 - 1))
    return world_seeds, render_seed, root_rng


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------ CVACT


def write_cvact_dataset(cfg: SynthConfig, out: Path, seed: int, progress: bool, workers: int = 1) -> None:
    """Build the train and val worlds, render every location and write the CVACT layout into ``out``."""
    for sub in ("streetview", "satview_polish"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    world_seeds, render_seed, root_rng = _seeds(seed, 2)
    counts = {"train": cfg.train_locations, "test": cfg.test_locations}
    n_all = sum(counts.values())
    ids = random_ids(root_rng, n_all)  # in location order: train then test
    position = root_rng.permutation(n_all)  # 0-based row of location k in panoIds
    spec = cfg.render_spec()
    reporter = _Progress(n_all, enabled=progress)
    xy = np.zeros((n_all, 2))
    split_of = []
    meta, x_offset, start = {}, 0.0, 0
    for split_index, split in enumerate(("train", "test")):
        reporter.note(f"building the {split} world")
        world, locations = _world_with_locations(cfg, int(world_seeds[split_index]), counts[split])
        pyramid = ground_pyramid(world)
        cache_before_fork(world)
        jobs = [(i, float(x), float(y), out / "satview_polish" / f"{ids[start + i]}_satView_polish.jpg",
                 out / "streetview" / f"{ids[start + i]}_grdView.jpg") for i, (x, y) in enumerate(locations)]
        render = partial(render_location, world, pyramid, spec, cfg.jpeg_quality, [render_seed, split_index])
        for _ in map_in_order(render, jobs, workers):
            reporter.step()
        for i, (x, y) in enumerate(locations):
            xy[start + i] = (float(x) + x_offset, float(y))
            split_of.append(split)
        _save_preview(world, locations, out / f"preview_{split}.png")
        meta[split] = {"origin_m": [x_offset, 0.0], "size_m": list(world.size_m),
                       "buildings": int(len(world.buildings) - 1), "locations": counts[split]}
        start += counts[split]
        x_offset += world.size_m[0] + 4 * cfg.tile_half_extent_m  # no tile straddles both worlds
    pano_ids = [""] * n_all
    utm = np.zeros((n_all, 2))
    for k in range(n_all):
        pano_ids[position[k]] = ids[k]
        utm[position[k]] = np.asarray(CVACT_UTM_ORIGIN) + xy[k]

    def index_vector(split: str) -> np.ndarray:  # 1-based, ascending, double column vector
        rows = sorted(int(position[k]) + 1 for k in range(n_all) if split_of[k] == split)
        return np.asarray(rows, dtype=np.float64).reshape(-1, 1)

    mat = {"panoIds": np.array(pano_ids),
           "trainSet": {"trainNum": float(counts["train"]), "trainInd": index_vector("train")},
           "valSet": {"valNum": float(counts["test"]), "valInd": index_vector("test")},
           "utm": utm}
    _save_mat(out / "ACT_data.mat", mat)
    with (out / "locations.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["pano_id", "mat_row", "split", "x_m", "y_m"])
        for k in np.argsort(position):
            writer.writerow([ids[k], int(position[k]) + 1, split_of[k], f"{xy[k, 0]:.2f}", f"{xy[k, 1]:.2f}"])
    _write_json(out / "world.json", {
        "generator": "cvgl.data.synth", "layout": "CVACT", "seed": seed, "config": config_dict(cfg),
        "pano_size": [cfg.pano_width, cfg.pano_height], "tile_size": cfg.tile_size,
        "tile_half_extent_m": cfg.tile_half_extent_m, "utm_origin": list(CVACT_UTM_ORIGIN), "worlds": meta})
    reporter.done()


def _save_mat(path: Path, mat: dict) -> None:
    """``scipy.io.savemat`` (MAT v5) with a fixed header text instead of the creation time."""
    buffer = io.BytesIO()
    sio.savemat(buffer, mat)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------ VIGOR


def _latlon(city: str, east_m: np.ndarray | float, north_m: np.ndarray | float):
    """Made-up lat/lon of city-frame metres (equirectangular around the city's anchor)."""
    lat0, lon0 = VIGOR_ANCHORS[city]
    lat = lat0 + np.asarray(north_m) / METRES_PER_DEG_LAT
    lon = lon0 + np.asarray(east_m) / (METRES_PER_DEG_LAT * math.cos(math.radians(lat0)))
    return lat, lon


def vigor_tiles_of(x: float, y: float, stride: float) -> list[tuple[int, int]]:
    """Grid indices (i east, j north) of the four tiles containing (x, y): the positive (nearest centre, so
    the point is in its central quarter) then the three semi-positives, nearest centre first."""
    i0, j0 = round(x / stride), round(y / stride)
    i1 = i0 + (1 if x >= i0 * stride else -1)
    j1 = j0 + (1 if y >= j0 * stride else -1)
    semis = [(i1, j0), (i0, j1), (i1, j1)]
    semis.sort(key=lambda ij: math.hypot(x - ij[0] * stride, y - ij[1] * stride))
    return [(i0, j0), *semis]


def write_vigor_dataset(cfg: SynthConfig, out: Path, seed: int, progress: bool, workers: int = 1) -> None:
    """Build one world per city, render its panoramas and its tile grid, write the VIGOR layout into ``out``."""
    cities = list(cfg.vigor_cities)
    world_seeds, render_seed, root_rng = _seeds(seed, len(cities))
    split_seed = int(root_rng.integers(0, 2**63 - 1))
    n_train, n_test = cfg.train_locations, cfg.test_locations
    per_city = n_train + n_test
    taken: set[str] = set()
    pano_ids = {city: random_ids(root_rng, per_city, taken) for city in cities}
    spec = cfg.render_spec()
    stride = cfg.tile_half_extent_m  # tile side = 2 half extents: 50 % overlap
    m_per_px = 2 * cfg.tile_half_extent_m / cfg.tile_size
    # Every tile of a panorama lies within 2 strides of it: keep panoramas a tile further from the world edge.
    border = _border_m(cfg) + cfg.tile_half_extent_m
    reporter = _Progress(len(cities) * per_city, enabled=progress)
    location_rows, meta = [], {}
    for ci, city in enumerate(cities):
        reporter.note(f"building the {city} world")
        world, locations = _world_with_locations(cfg, int(world_seeds[ci]), per_city, border=border)
        pyramid = ground_pyramid(world)
        cache_before_fork(world)
        (out / "splits" / city).mkdir(parents=True, exist_ok=True)
        for sub in ("satellite", "panorama"):
            (out / city / sub).mkdir(parents=True, exist_ok=True)
        # the tile grid over the panoramas' bounding box plus one stride
        index = np.rint(locations / stride).astype(int)
        i_range = range(int(index[:, 0].min()) - 1, int(index[:, 0].max()) + 2)
        j_range = range(int(index[:, 1].min()) - 1, int(index[:, 1].max()) + 2)
        tile_name = {}
        for j in reversed(j_range):  # north to south, west to east
            for i in i_range:
                lat, lon = _latlon(city, i * stride, j * stride)
                tile_name[i, j] = f"satellite_{float(lat)!r}_{float(lon)!r}.png"
        (out / "splits" / city / "satellite_list.txt").write_text("".join(f"{n}\n" for n in tile_name.values()))
        tiles = [(k, i * stride, j * stride, out / city / "satellite" / tile_name[i, j])
                 for k, (i, j) in enumerate(tile_name)]
        list(map_in_order(partial(_render_vigor_tile, world, spec, [render_seed, ci, 1]), tiles, workers))
        reporter.note(f"rendered {len(tile_name)} {city} tiles")
        is_train = np.zeros(per_city, bool)
        is_train[np.random.default_rng([split_seed, ci]).permutation(per_city)[:n_train]] = True
        names = []
        for p, (x, y) in enumerate(locations):
            lat, lon = _latlon(city, x, y)
            names.append(f"{pano_ids[city][p]},{float(lat):.6f},{float(lon):.6f},.jpg")
        panoramas = [(p, float(x), float(y), out / city / "panorama" / name)
                     for p, (name, (x, y)) in enumerate(zip(names, locations, strict=True))]
        render = partial(_render_vigor_panorama, world, pyramid, spec, cfg.jpeg_quality, [render_seed, ci, 0])
        for _ in map_in_order(render, panoramas, workers):
            reporter.step()
        lines = []
        for p, (name, (x, y)) in enumerate(zip(names, locations, strict=True)):
            fields = [name]
            for i, j in vigor_tiles_of(float(x), float(y), stride):
                d0, d1 = (j * stride - y) / m_per_px, (i * stride - x) / m_per_px
                fields += [tile_name[i, j], f"{d0:.1f}", f"{d1:.1f}"]
            lines.append(" ".join(fields) + "\n")
            split = "train" if is_train[p] else "test"
            location_rows.append([name, city, split, f"{x:.2f}", f"{y:.2f}"])
        split_dir = out / "splits" / city
        (split_dir / "same_area_balanced_train.txt").write_text("".join(np.array(lines)[is_train]))
        (split_dir / "same_area_balanced_test.txt").write_text("".join(np.array(lines)[~is_train]))
        (split_dir / "pano_label_balanced.txt").write_text("".join(lines))
        _save_preview(world, locations, out / f"preview_{city}.png")
        meta[city] = {"size_m": list(world.size_m), "buildings": int(len(world.buildings) - 1),
                      "panoramas": per_city, "train": n_train, "test": n_test, "tiles": len(tile_name),
                      "anchor_latlon": list(VIGOR_ANCHORS[city])}
    with (out / "locations.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["panorama", "city", "split", "x_m", "y_m"])
        writer.writerows(location_rows)
    _write_json(out / "world.json", {
        "generator": "cvgl.data.synth", "layout": "VIGOR", "seed": seed, "config": config_dict(cfg),
        "pano_size": [cfg.pano_width, cfg.pano_height], "tile_size": cfg.tile_size,
        "tile_half_extent_m": cfg.tile_half_extent_m, "tile_stride_m": stride, "metres_per_pixel": m_per_px,
        "offsets": "d0 = (north_tile - north_pano) / m_per_px, d1 = (east_tile - east_pano) / m_per_px; "
                   "panorama at tile pixel (row, col) = (S/2 + d0, S/2 - d1)",
        "cities": meta})
    reporter.done()


def _render_vigor_tile(world: World, spec: RenderSpec, seed_prefix: list[int],
                       tile: tuple[int, float, float, Path]) -> None:
    """Render grid tile ``(k, x, y, path)`` from a generator seeded ``[*seed_prefix, k]`` and save it as PNG."""
    k, x, y, path = tile
    image = render_tile(world, x, y, spec, np.random.default_rng([*seed_prefix, k]))
    Image.fromarray(to_uint8(image)).save(path, format="PNG")


def _render_vigor_panorama(world: World, pyramid: GroundMipmap, spec: RenderSpec, quality: int,
                           seed_prefix: list[int], panorama: tuple[int, float, float, Path]) -> None:
    """Render panorama ``(p, x, y, path)`` from a generator seeded ``[*seed_prefix, p]`` and save it as JPEG."""
    p, x, y, path = panorama
    image = render_panorama(world, pyramid, x, y, spec, np.random.default_rng([*seed_prefix, p]))
    _save_jpeg(image, path, quality)
