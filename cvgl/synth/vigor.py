"""The synthetic world written in the VIGOR layout (``synth.layout: vigor``, docs/method.md §1.3).

Full 2:1 equirectangular panoramas (``pano_width`` x ``pano_width / 2``, rows from the zenith to the nadir,
centre column north like CVUSA) and north-up tiles of ``tile_size`` pixels spanning the BEV extent
(``SynthConfig.tile_half_extent_m``). Read by :mod:`cvgl.data.vigor`::

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
import math
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from cvgl.geometry import to_uint8
from cvgl.synth.config import SynthConfig, config_dict
from cvgl.synth.locations import METRES_PER_DEG_LAT, border_m, world_with_locations
from cvgl.synth.render import GroundMipmap, RenderSpec, ground_pyramid, render_panorama, render_tile
from cvgl.synth.world import World
from cvgl.synth.writing import (
    Progress,
    cache_before_fork,
    draw_seeds,
    map_in_order,
    random_ids,
    save_jpeg,
    save_preview,
    write_world_json,
)

#: Lat/lon of the origin (world corner) of each synthetic VIGOR city (the real city centres).
VIGOR_ANCHORS = {"Chicago": (41.8781, -87.6298), "NewYork": (40.7128, -74.0060),
                 "SanFrancisco": (37.7749, -122.4194), "Seattle": (47.6062, -122.3321)}


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
    world_seeds, render_seed, root_rng = draw_seeds(seed, len(cities))
    split_seed = int(root_rng.integers(0, 2**63 - 1))
    n_train, n_test = cfg.train_locations, cfg.test_locations
    per_city = n_train + n_test
    taken: set[str] = set()
    pano_ids = {city: random_ids(root_rng, per_city, taken) for city in cities}
    spec = cfg.render_spec()
    stride = cfg.tile_half_extent_m  # tile side = 2 half extents: 50 % overlap
    m_per_px = 2 * cfg.tile_half_extent_m / cfg.tile_size
    # Every tile of a panorama lies within 2 strides of it: keep panoramas a tile further from the world edge.
    border = border_m(cfg) + cfg.tile_half_extent_m
    reporter = Progress(len(cities) * per_city, enabled=progress)
    location_rows, meta = [], {}
    for ci, city in enumerate(cities):
        reporter.note(f"building the {city} world")
        world, locations = world_with_locations(cfg, int(world_seeds[ci]), per_city, border=border)
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
        save_preview(world, locations, out / f"preview_{city}.png")
        meta[city] = {"size_m": list(world.size_m), "buildings": int(len(world.buildings) - 1),
                      "panoramas": per_city, "train": n_train, "test": n_test, "tiles": len(tile_name),
                      "anchor_latlon": list(VIGOR_ANCHORS[city])}
    with (out / "locations.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["panorama", "city", "split", "x_m", "y_m"])
        writer.writerows(location_rows)
    write_world_json(out / "world.json", "VIGOR", seed, config_dict(cfg), pano_size=[cfg.pano_width, cfg.pano_height],
                     tile_size=cfg.tile_size, tile_half_extent_m=cfg.tile_half_extent_m, tile_stride_m=stride,
                     metres_per_pixel=m_per_px,
                     offsets="d0 = (north_tile - north_pano) / m_per_px, d1 = (east_tile - east_pano) / m_per_px; "
                             "panorama at tile pixel (row, col) = (S/2 + d0, S/2 - d1)",
                     cities=meta)
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
    save_jpeg(image, path, quality)
