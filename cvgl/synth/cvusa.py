"""The synthetic world written in the CVUSA layout (the default ``synth.layout``).

Layout written under the dataset root (read by the CVUSA adapter exactly like the real dataset, docs/method.md
§1.1)::

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
import math
from functools import partial
from pathlib import Path

from cvgl.synth.config import SynthConfig, config_dict
from cvgl.synth.locations import METRES_PER_DEG_LAT, world_with_locations
from cvgl.synth.render import ground_pyramid
from cvgl.synth.writing import (
    Progress,
    cache_before_fork,
    draw_seeds,
    map_in_order,
    render_location,
    save_preview,
    write_world_json,
)

#: The split files of the CVUSA release, by split.
SPLIT_FILES = {"train": "train-19zl.csv", "test": "val-19zl.csv"}
#: Knobs that only matter for the CVACT/VIGOR layouts; left out of the CVUSA ``world.json`` (unchanged bytes).
_LAYOUT_KEYS = ("layout", "vigor_cities")
#: Synthetic GPS anchor of the world's origin (for the CVUSA-style location table only).
ORIGIN_LAT, ORIGIN_LON = 40.0, -90.0


def write_cvusa_dataset(cfg: SynthConfig, out: Path, seed: int, progress: bool, workers: int = 1) -> None:
    """Build both worlds, render every location, write images, split CSVs and metadata into ``out``."""
    for sub in ("splits", "bingmap/19", "streetview/panos", "split_locations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    world_seeds, render_seed, root_rng = draw_seeds(seed, 2)
    counts = {"train": cfg.train_locations, "test": cfg.test_locations}
    ids = root_rng.permutation(sum(counts.values())) + 1
    spec = cfg.render_spec()
    reporter = Progress(sum(counts.values()), enabled=progress)
    rows, meta, x_offset, start = [], {}, 0.0, 0
    for split_index, split in enumerate(("train", "test")):
        reporter.note(f"building the {split} world")
        world, locations = world_with_locations(cfg, int(world_seeds[split_index]), counts[split])
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
        save_preview(world, locations, out / f"preview_{split}.png")
        meta[split] = {"origin_m": [x_offset, 0.0], "size_m": list(world.size_m),
                       "buildings": int(len(world.buildings) - 1), "locations": counts[split]}
        # The next world starts beyond a gap of two tile widths: no tile can straddle both.
        x_offset += world.size_m[0] + 4 * cfg.tile_half_extent_m
    _write_locations(out, sorted(rows))
    config = {k: v for k, v in config_dict(cfg).items() if k not in _LAYOUT_KEYS}
    write_world_json(out / "world.json", "CVUSA", seed, config, pano_size=[cfg.pano_width, cfg.pano_height],
                     tile_half_extent_m=cfg.tile_half_extent_m, worlds=meta)
    reporter.done()


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    """CSV rows without a header (the split files have none)."""
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
