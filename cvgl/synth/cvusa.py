"""Synthetic dataset: a procedural 2.5-D world rendered into the CVUSA, CVACT or VIGOR on-disk layout.

``write_synthetic(cfg, root, seed)`` writes the layout named by ``cfg.layout``: ``"cvusa"`` (default, below),
``"cvact"`` or ``"vigor"`` (see :mod:`cvgl.data.synth_layouts`). ``write_synthetic_cvusa`` always writes CVUSA.

CVUSA layout written under ``root`` (read by the CVUSA adapter exactly like the real dataset, docs/method.md §1.1)::

    splits/train-19zl.csv, splits/val-19zl.csv   no header: bingmap/19/<id>.jpg,streetview/panos/<id>.jpg,
                                                 streetview/annotations/<id>.png (annotations not written)
    bingmap/19/<id>.jpg                          north-up satellite tile, tile_size x tile_size
    streetview/panos/<id>.jpg                    CVUSA band, pano_width x round(pano_width * 224 / 1232)
    split_locations/all.csv                      CVUSA-style GPS table (row = id - 1), synthetic lat/lon
    locations.csv                                id, split, x_m, y_m (metric, global frame)
    world.json, preview_{train,test}.png         the config used and top views of the two worlds

Train and test locations come from two different worlds (different sub-seeds), placed side by side in one
global metric frame with a gap wider than two tiles, so no test tile overlaps a train tile or shares content.
Locations are sampled along road centrelines with a minimum spacing. Ids are a random permutation of
1..N over both splits (like CVUSA's interleaved ids, they carry no split information).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from cvgl.geometry import bev_half_extent_m, cvusa_band_height, to_uint8
from cvgl.synth.render import GroundMipmap, RenderKnobs, RenderSpec, ground_pyramid, render_panorama, render_tile
from cvgl.synth.world import World, WorldSpec, build_world

SPLIT_FILES = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
#: On-disk layouts ``write_synthetic`` can write (``SynthConfig.layout``).
LAYOUTS = ("cvusa", "cvact", "vigor")
#: The four VIGOR cities (docs/method.md §1.3); ``vigor_cities`` picks synthetic areas named after them.
VIGOR_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
#: Knobs that only matter for the CVACT/VIGOR layouts; left out of the CVUSA ``world.json`` (unchanged bytes).
_LAYOUT_KEYS = ("layout", "vigor_cities")
#: Synthetic GPS anchor of the world's origin (for the CVUSA-style location table only).
ORIGIN_LAT, ORIGIN_LON = 40.0, -90.0
METRES_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class SynthConfig(WorldSpec, RenderKnobs):
    """Every knob of the synthetic world and its rendering (flat, so it maps 1:1 onto ``config.yaml``).

    The world's and the renderer's knobs are inherited from ``WorldSpec`` and ``RenderKnobs``, so their
    defaults live in one place.
    """

    # dataset size and sampling
    train_locations: int = 1200
    test_locations: int = 400
    min_spacing_m: float = 40.0
    # cameras and sensor styles: inherited from RenderKnobs (tile extent = +-camera_height * tan(fov/2))
    jpeg_quality: int = 90
    # on-disk layout: "cvusa" (CVUSA band panoramas), "cvact" or "vigor" (full 2:1 panoramas)
    layout: str = "cvusa"
    # VIGOR only: one synthetic area (its own world) per name, a subset of the four VIGOR cities
    vigor_cities: tuple[str, ...] = ("Chicago", "NewYork")

    @property
    def full_panorama(self) -> bool:
        """True for the layouts with full 2:1 equirectangular panoramas (CVACT, VIGOR)."""
        return self.layout != "cvusa"

    @property
    def pano_height(self) -> int:
        """Height of the CVUSA band (1232:224 aspect), or W/2 for a full 2:1 panorama."""
        return self.pano_width // 2 if self.full_panorama else cvusa_band_height(self.pano_width)

    @property
    def tile_half_extent_m(self) -> float:
        """Half side of a tile in metres, equal to the BEV projection's extent."""
        return bev_half_extent_m(self.camera_height, self.fov_deg)

    def world_spec(self) -> WorldSpec:
        return WorldSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(WorldSpec)})

    def render_spec(self, styled: bool = True) -> RenderSpec:
        names = {f.name for f in dataclasses.fields(RenderSpec)} - {"pano_height", "styled", "band"}
        return RenderSpec(pano_height=self.pano_height, styled=styled, band=not self.full_panorama,
                          **{name: getattr(self, name) for name in names})


def synth_config_from_dict(d: dict) -> SynthConfig:
    """Build a config from a (possibly partial) mapping.

    Unknown keys and unusable values raise ValueError naming the key as ``synth.<key>``.
    """
    fields = {f.name: f for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key synth.{unknown[0]} (known: {', '.join(sorted(fields))})")
    values = {}
    for key, value in d.items():
        default = fields[key].default
        if isinstance(default, tuple) and default and isinstance(default[0], str):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"synth.{key} must be a list of names, got {value!r}")
            value = tuple(value)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ValueError(f"synth.{key} must be a list of {len(default)} numbers, got {value!r}")
            value = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        values[key] = value
    cfg = SynthConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: SynthConfig) -> None:
    """Reject values that cannot produce a dataset, naming the key."""
    positive = ["train_locations", "test_locations", "tile_size", "pano_width", "camera_height", "resolution",
                "min_spacing_m", "block_min_m", "road_width_min_m", "max_view_distance_m", "fog_distance_m",
                "pano_row_supersample", "building_size_min_m", "crown_radius_min_m"]
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ValueError(f"synth.{key} must be > 0, got {getattr(cfg, key)}")
    ordered = [("block_min_m", "block_max_m"), ("road_width_min_m", "road_width_max_m"),
               ("building_size_min_m", "building_size_max_m"),
               ("building_height_min_m", "building_height_max_m"),
               ("tree_height_min_m", "tree_height_max_m"), ("crown_radius_min_m", "crown_radius_max_m")]
    for lo, hi in ordered:
        if getattr(cfg, lo) > getattr(cfg, hi):
            raise ValueError(f"synth.{lo} must be <= synth.{hi}")
    if not 0 < cfg.fov_deg < 180:
        raise ValueError(f"synth.fov_deg must be in (0, 180), got {cfg.fov_deg}")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise ValueError(f"synth.jpeg_quality must be in [1, 100], got {cfg.jpeg_quality}")
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"synth.layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
    if cfg.full_panorama and cfg.pano_width % 2:
        raise ValueError(f"synth.pano_width must be even for the 2:1 panoramas of layout {cfg.layout}, "
                         f"got {cfg.pano_width}")
    cities = cfg.vigor_cities
    if not cities or any(c not in VIGOR_CITIES for c in cities) or len(set(cities)) != len(cities):
        raise ValueError(f"synth.vigor_cities must be distinct names among {', '.join(VIGOR_CITIES)}, "
                         f"got {list(cities)}")


# ------------------------------------------------------------------------------------------ locations


def _world_size_m(cfg: SynthConfig, n_locations: int, grow: float,
                  border: float | None = None) -> tuple[float, float]:
    """Square world holding ``n_locations``: road density ~ 2/block, one location per ~1.9 spacings of road
    (measured: greedy spacing also rejects points across crossings), plus a border (default
    :func:`_border_m`) so tiles and the panorama's near field stay inside the world."""
    block = (cfg.block_min_m + cfg.block_max_m) / 2
    area_per_location = 1.9 * cfg.min_spacing_m * block / 2 / (1 - cfg.road_drop_prob / 2)
    border = _border_m(cfg) if border is None else border
    side = math.sqrt(n_locations * area_per_location) * grow + 2 * border
    return side, side


def _border_m(cfg: SynthConfig) -> float:
    """Margin between sampled locations and the world edge (a tile plus some view distance)."""
    return cfg.tile_half_extent_m + 60.0


def sample_locations(rng: np.random.Generator, world: World, n: int, min_spacing: float,
                     border: float) -> np.ndarray | None:
    """(n, 2) camera positions on roads, pairwise >= min_spacing apart; None if the world is too small.

    Candidates are road centreline samples in random order, accepted greedily; the camera is moved
    sideways into a lane (up to a quarter of the road width), as a car would be.
    """
    pts = world.road_points
    width_m, height_m = world.size_m
    inside = ((pts[:, 0] > border) & (pts[:, 0] < width_m - border)
              & (pts[:, 1] > border) & (pts[:, 1] < height_m - border))
    pts = pts[inside][rng.permutation(int(inside.sum()))]
    cell = min_spacing
    grid: dict[tuple[int, int], list[np.ndarray]] = {}
    chosen = []
    for x, y, width, dx, dy in pts:
        lateral = rng.uniform(-width / 4, width / 4)
        p = np.array([x - dy * lateral, y + dx * lateral])
        gx, gy = int(p[0] // cell), int(p[1] // cell)
        near = (q for i in (-1, 0, 1) for j in (-1, 0, 1) for q in grid.get((gx + i, gy + j), []))
        if any(np.hypot(*(p - q)) < min_spacing for q in near):
            continue
        grid.setdefault((gx, gy), []).append(p)
        chosen.append(p)
        if len(chosen) == n:
            return np.array(chosen)
    return None


def _world_with_locations(cfg: SynthConfig, seed: int, n: int,
                          border: float | None = None) -> tuple[World, np.ndarray]:
    """Generate a world big enough for ``n`` locations (grown by 25 % per retry) and sample them at least
    ``border`` metres (default :func:`_border_m`) inside its edge."""
    border = _border_m(cfg) if border is None else border
    grow = 1.0
    for _ in range(8):
        rng = np.random.default_rng(seed)
        world = build_world(rng, cfg.world_spec(), _world_size_m(cfg, n, grow, border))
        locations = sample_locations(rng, world, n, cfg.min_spacing_m, border)
        if locations is not None:
            return world, locations
        grow *= 1.25
    raise RuntimeError(f"could not place {n} locations with synth.min_spacing_m={cfg.min_spacing_m}")


# ------------------------------------------------------------------------------------------ writing


def write_synthetic(cfg: SynthConfig, root: Path, seed: int, progress: bool = True, workers: int = 1) -> None:
    """Generate the synthetic world(s) and write them in the layout ``cfg.layout`` under ``root``, atomically.

    Everything is built in ``<root>.tmp-<pid>`` and moved onto ``root`` at the end, so an interrupted run
    leaves no half-written dataset. Same ``cfg`` and ``seed`` give byte-identical files, whatever ``workers``
    (the number of processes rendering the locations; 1 renders them in this process).
    """
    if cfg.layout == "cvusa":
        writer = _write_dataset
    elif cfg.layout == "cvact":
        from cvgl.synth.vigor import write_cvact_dataset as writer
    elif cfg.layout == "vigor":
        from cvgl.synth.vigor import write_vigor_dataset as writer
    else:
        raise ValueError(f"synth.layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
    _write_atomically(writer, cfg, Path(root), seed, progress, workers)


def write_synthetic_cvusa(cfg: SynthConfig, root: Path, seed: int, progress: bool = True, workers: int = 1) -> None:
    """Generate the synthetic world and write it in the CVUSA layout under ``root`` (whatever ``cfg.layout``
    says), atomically; same ``cfg`` and ``seed`` give byte-identical files (see :func:`write_synthetic`)."""
    _write_atomically(_write_dataset, dataclasses.replace(cfg, layout="cvusa"), Path(root), seed, progress,
                      workers)


def _write_atomically(writer, cfg: SynthConfig, root: Path, seed: int, progress: bool, workers: int) -> None:
    """Run ``writer(cfg, tmp, seed, progress, workers)`` into ``<root>.tmp-<pid>``, then move it onto ``root``."""
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer(cfg, tmp, seed, progress, workers)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``; an existing ``dst`` is set aside first and deleted afterwards."""
    old = dst.parent / f"{dst.name}.old-{os.getpid()}"
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _write_dataset(cfg: SynthConfig, out: Path, seed: int, progress: bool, workers: int = 1) -> None:
    """Build both worlds, render every location, write images, split CSVs and metadata into ``out``."""
    for sub in ("splits", "bingmap/19", "streetview/panos", "split_locations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    root_rng = np.random.default_rng(seed)
    world_seeds = root_rng.integers(0, 2**63 - 1, size=2)
    render_seed = int(root_rng.integers(0, 2**63 - 1))
    counts = {"train": cfg.train_locations, "test": cfg.test_locations}
    ids = root_rng.permutation(sum(counts.values())) + 1
    spec = cfg.render_spec()
    reporter = _Progress(sum(counts.values()), enabled=progress)
    rows, meta, x_offset, start = [], {}, 0.0, 0
    for split_index, split in enumerate(("train", "test")):
        reporter.note(f"building the {split} world")
        world, locations = _world_with_locations(cfg, int(world_seeds[split_index]), counts[split])
        pyramid = ground_pyramid(world)
        cache_before_fork(world)
        split_ids = ids[start: start + counts[split]]
        start += counts[split]
        names = [f"{int(loc_id):07d}" for loc_id in split_ids]
        jobs = [(i, float(x), float(y), out / "bingmap/19" / f"{name}.jpg", out / "streetview/panos" / f"{name}.jpg")
                for i, (name, (x, y)) in enumerate(zip(names, locations, strict=True))]
        render = partial(render_location, world, pyramid, spec, cfg.jpeg_quality, [render_seed, split_index])
        for _ in map_in_order(render, jobs, workers):
            reporter.step()
        csv_rows = [[f"bingmap/19/{name}.jpg", f"streetview/panos/{name}.jpg", f"streetview/annotations/{name}.png"]
                    for name in names]
        rows += [(int(loc_id), split, float(x) + x_offset, float(y))
                 for loc_id, (x, y) in zip(split_ids, locations, strict=True)]
        _write_csv(out / "splits" / SPLIT_FILES[split], csv_rows)
        _save_preview(world, locations, out / f"preview_{split}.png")
        meta[split] = {"origin_m": [x_offset, 0.0], "size_m": list(world.size_m),
                       "buildings": int(len(world.buildings) - 1), "locations": counts[split]}
        # The next world starts beyond a gap of two tile widths: no tile can straddle both.
        x_offset += world.size_m[0] + 4 * cfg.tile_half_extent_m
    _write_locations(out, sorted(rows))
    config = {k: v for k, v in config_dict(cfg).items() if k not in _LAYOUT_KEYS}
    (out / "world.json").write_text(json.dumps(
        {"generator": "cvgl.data.synth", "layout": "CVUSA", "seed": seed, "config": config,
         "pano_size": [cfg.pano_width, cfg.pano_height], "tile_half_extent_m": cfg.tile_half_extent_m,
         "worlds": meta}, indent=2) + "\n")
    reporter.done()


def render_location(world: World, pyramid: GroundMipmap, spec: RenderSpec, quality: int, seed_prefix: list[int],
                    location: tuple[int, float, float, Path, Path]) -> None:
    """Render location ``(i, x, y, tile_path, pano_path)``: its tile, then its panorama, from one generator
    seeded ``[*seed_prefix, i]``, saved as JPEGs at the two paths."""
    i, x, y, tile_path, pano_path = location
    rng = np.random.default_rng([*seed_prefix, i])
    tile = render_tile(world, x, y, spec, rng)
    pano = render_panorama(world, pyramid, x, y, spec, rng)
    _save_jpeg(tile, tile_path, quality)
    _save_jpeg(pano, pano_path, quality)


def cache_before_fork(world: World) -> None:
    """Compute the world's lazily cached rasters (the cast-shadow heights) now, so forked render workers
    share this copy instead of each computing its own."""
    _ = world.max_height


#: The job the forked render workers run: set by :func:`map_in_order` before its pool forks, so the workers
#: inherit the job and the world it holds instead of receiving them pickled.
_FORKED_JOB: Callable | None = None
#: Items a worker takes at a time (a location takes ~0.1 s; small chunks keep the last ones balanced).
_CHUNK_SIZE = 4


def _run_forked_job(item):
    return _FORKED_JOB(item)


def map_in_order(job: Callable, items: Iterable, workers: int) -> Iterator:
    """``job(item)`` for every item, yielded in the items' order.

    ``workers`` > 1 runs the jobs on that many forked processes (fewer if there are fewer items): they
    inherit ``job`` with the world it holds, only the items and the results are pickled. The rendering is
    numpy only (no BLAS, no torch), one thread per process. A job's rng must come from its item, so the
    results do not depend on which process ran it.
    """
    global _FORKED_JOB
    items = list(items)
    workers = min(workers, len(items))
    if workers <= 1:
        yield from map(job, items)
        return
    if _FORKED_JOB is not None:
        raise RuntimeError("map_in_order: another forked map is running in this process")
    _FORKED_JOB = job
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_run_forked_job, items, chunksize=_CHUNK_SIZE)
            pool.close()
            pool.join()
    finally:
        _FORKED_JOB = None


def config_dict(cfg: SynthConfig) -> dict:
    """The config as a JSON-ready mapping (tuples as lists), in field order."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def _save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(to_uint8(image)).save(path, format="JPEG", quality=quality)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _write_locations(out: Path, rows: list[tuple[int, str, float, float]]) -> None:
    """Metric ``locations.csv`` and a CVUSA-style ``split_locations/all.csv`` (row = id - 1)."""
    with (out / "locations.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "split", "x_m", "y_m"])
        writer.writerows([i, s, f"{x:.2f}", f"{y:.2f}"] for i, s, x, y in rows)
    with (out / "split_locations/all.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        for _, _, x, y in rows:
            lat = ORIGIN_LAT + y / METRES_PER_DEG_LAT
            lon = ORIGIN_LON + x / (METRES_PER_DEG_LAT * math.cos(math.radians(ORIGIN_LAT)))
            writer.writerow([f"{lat:.7f}", f"{lon:.7f}", f"{lat:.7f}", f"{lon:.7f}"])


def _save_preview(world: World, locations: np.ndarray, path: Path, max_side: int = 800) -> None:
    """Downsampled top view with the sampled locations marked in red."""
    step = max(1, int(math.ceil(max(world.shape) / max_side)))
    image = world.top_rgb[::step, ::step].copy()
    r, c = world.to_pixel(locations[:, 0], locations[:, 1])
    r = np.clip((r / step).astype(int), 0, image.shape[0] - 1)
    c = np.clip((c / step).astype(int), 0, image.shape[1] - 1)
    image[r, c] = (255, 0, 0)
    Image.fromarray(image).save(path, format="PNG")


class _Progress:
    """A line on stderr about every 10 % of the locations (no dependency on tqdm)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.count = total, enabled, 0
        self.start = time.perf_counter()
        self.next_report = max(1, total // 10)

    def note(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"[synth] {message} ({elapsed:.1f} s)", file=sys.stderr, flush=True)

    def step(self) -> None:
        self.count += 1
        if self.count >= self.next_report or self.count == self.total:
            self.next_report += max(1, self.total // 10)
            self.note(f"rendered {self.count}/{self.total} locations")

    def done(self) -> None:
        self.note("done")
