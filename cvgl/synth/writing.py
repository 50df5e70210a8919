"""What the three layout writers share: the draws from the dataset seed, rendering and saving a location on one
or several processes, previews, ``world.json`` and progress lines.

A writer draws its world sub-seeds and render seed with :func:`draw_seeds`, and seeds each location's generator
from its index (``[render_seed, world, i]``), so the bytes never depend on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cvgl.geometry import to_uint8
from cvgl.synth.render import GroundMipmap, RenderSpec, render_panorama, render_tile
from cvgl.synth.world import World

#: ``world.json``'s ``generator`` field: the module that wrote the first worlds, kept so that the files of a
#: world stay byte-identical across the package's moves.
GENERATOR = "cvgl.data.synth"
#: Characters of the synthetic pano ids (url-safe base64, like Google Street View pano ids).
ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
ID_LENGTH = 22


def draw_seeds(seed: int, n_worlds: int) -> tuple[np.ndarray, int, np.random.Generator]:
    """``n_worlds`` world sub-seeds and the render seed, drawn first from ``seed`` (in this order, by every
    layout), and the generator the layout draws the rest from (ids, splits)."""
    root_rng = np.random.default_rng(seed)
    world_seeds = root_rng.integers(0, 2**63 - 1, size=n_worlds)
    render_seed = int(root_rng.integers(0, 2**63 - 1))
    return world_seeds, render_seed, root_rng


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


def render_location(world: World, pyramid: GroundMipmap, spec: RenderSpec, quality: int, seed_prefix: list[int],
                    location: tuple[int, float, float, Path, Path]) -> None:
    """Render location ``(i, x, y, tile_path, pano_path)``: its tile, then its panorama, from one generator
    seeded ``[*seed_prefix, i]``, saved as JPEGs at the two paths."""
    i, x, y, tile_path, pano_path = location
    rng = np.random.default_rng([*seed_prefix, i])
    tile = render_tile(world, x, y, spec, rng)
    pano = render_panorama(world, pyramid, x, y, spec, rng)
    save_jpeg(tile, tile_path, quality)
    save_jpeg(pano, pano_path, quality)


def save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    """Save a float RGB image (clipped to 0..255) as a JPEG of ``quality``."""
    Image.fromarray(to_uint8(image)).save(path, format="JPEG", quality=quality)


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


def save_preview(world: World, locations: np.ndarray, path: Path, max_side: int = 800) -> None:
    """Downsampled top view with the sampled locations marked in red."""
    step = max(1, int(math.ceil(max(world.shape) / max_side)))
    image = world.top_rgb[::step, ::step].copy()
    r, c = world.to_pixel(locations[:, 0], locations[:, 1])
    r = np.clip((r / step).astype(int), 0, image.shape[0] - 1)
    c = np.clip((c / step).astype(int), 0, image.shape[1] - 1)
    image[r, c] = (255, 0, 0)
    Image.fromarray(image).save(path, format="PNG")


def write_world_json(path: Path, layout: str, seed: int, config: dict, **fields) -> None:
    """``world.json``: generator, layout, seed and config, then the layout's own ``fields`` in the given order."""
    payload = {"generator": GENERATOR, "layout": layout, "seed": seed, "config": config, **fields}
    path.write_text(json.dumps(payload, indent=2) + "\n")


class Progress:
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
