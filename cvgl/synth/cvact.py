"""The synthetic world written in the CVACT layout (``synth.layout: cvact``, docs/method.md §1.2).

Full 2:1 equirectangular panoramas (``pano_width`` x ``pano_width / 2``, rows from the zenith to the nadir,
centre column north like CVUSA) and north-up tiles of ``tile_size`` pixels spanning the BEV extent
(``SynthConfig.tile_half_extent_m``). Read by :mod:`cvgl.data.cvact`::

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
"""

from __future__ import annotations

import csv
import io
from functools import partial
from pathlib import Path

import numpy as np
import scipy.io as sio

from cvgl.synth.config import SynthConfig, config_dict
from cvgl.synth.locations import world_with_locations
from cvgl.synth.render import ground_pyramid
from cvgl.synth.writing import (
    Progress,
    cache_before_fork,
    draw_seeds,
    map_in_order,
    random_ids,
    render_location,
    save_preview,
    write_world_json,
)

#: Made-up UTM origin of the CVACT global frame (around Canberra, zone 55H, where CVACT was captured).
CVACT_UTM_ORIGIN = (690_000.0, 6_090_000.0)
#: MAT-file header text (scipy writes the creation time, which would break byte-identical outputs; the module
#: named is the one that wrote the first worlds, kept so that their files stay the same).
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created by: cvgl.data.synth (synthetic CVACT)"


def write_cvact_dataset(cfg: SynthConfig, out: Path, seed: int, progress: bool, workers: int = 1) -> None:
    """Build the train and val worlds, render every location and write the CVACT layout into ``out``."""
    for sub in ("streetview", "satview_polish"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    world_seeds, render_seed, root_rng = draw_seeds(seed, 2)
    counts = {"train": cfg.train_locations, "test": cfg.test_locations}
    n_all = sum(counts.values())
    ids = random_ids(root_rng, n_all)  # in location order: train then test
    position = root_rng.permutation(n_all)  # 0-based row of location k in panoIds
    spec = cfg.render_spec()
    reporter = Progress(n_all, enabled=progress)
    xy = np.zeros((n_all, 2))
    split_of = []
    meta, x_offset, start = {}, 0.0, 0
    for split_index, split in enumerate(("train", "test")):
        reporter.note(f"building the {split} world")
        world, locations = world_with_locations(cfg, int(world_seeds[split_index]), counts[split])
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
        save_preview(world, locations, out / f"preview_{split}.png")
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
    write_world_json(out / "world.json", "CVACT", seed, config_dict(cfg), pano_size=[cfg.pano_width, cfg.pano_height],
                     tile_size=cfg.tile_size, tile_half_extent_m=cfg.tile_half_extent_m,
                     utm_origin=list(CVACT_UTM_ORIGIN), worlds=meta)
    reporter.done()


def _save_mat(path: Path, mat: dict) -> None:
    """``scipy.io.savemat`` (MAT v5) with a fixed header text instead of the creation time."""
    buffer = io.BytesIO()
    sio.savemat(buffer, mat)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    path.write_bytes(bytes(data))
