"""Panorama files to bird's-eye-view images: decoded, projected and encoded in batches on worker processes.

The sampling grid is built once per (panorama size, output size, field of view, band) and cached in each
process (`cvgl.geometry.bev_sampling_grid`). Per image, a PNG encode dominates (about 0.1-0.17 s at 750 x 750
and 0.6 s at 1200 x 1200 on one core, against 0.01-0.02 s of sampling and rounding; the default JPEG takes a
few ms), so a whole task --
decode, project, round, encode a batch of files -- runs in one worker: nothing but file names crosses process
boundaries, and every step scales with the workers. Each worker uses one torch thread; the output bytes do not
depend on the worker count or the batch size (`benchmarks/projection_speed.py` checks both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from cvgl.geometry import project_to_bev, to_uint8
from cvgl.io import Progress, load_image, save_image


def bev_images(bev: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) float BEVs -> (B, S, S, C) uint8 images (a view; rounded before the channel move, which is
    4x fewer bytes to shuffle than moving the float channels first)."""
    return to_uint8(bev).transpose(0, 2, 3, 1)


def project_file(source: Path, target: Path, pano_hw: tuple[int, int], size: int, fov_deg: float,
                 band: bool) -> None:
    """Decode `source` (resized to `pano_hw`), project it with the cached grid and save it as `target` (PNG or
    JPEG, by its suffix)."""
    pano = np.array(load_image(source, pano_hw))  # a writable copy: torch does not wrap read-only arrays
    bev = project_to_bev(torch.from_numpy(pano).permute(2, 0, 1)[None].float(), size, fov_deg, band)
    save_image(bev_images(bev)[0], target)


def project_batch(sources: Sequence[Path], targets: Sequence[Path], pano_hw: tuple[int, int], size: int,
                  fov_deg: float, band: bool) -> int:
    """One worker task. Its images go through `grid_sample` one at a time: on a CPU a stacked batch is no faster
    (slower at 1200 x 1200, benchmarks/projection_speed.py) and holds batch-size times the float buffers."""
    for source, target in zip(sources, targets, strict=True):
        project_file(source, target, pano_hw, size, fov_deg, band)
    return len(sources)


def _single_torch_thread() -> None:
    # One process per core: intra-op threads would only oversubscribe (and forked OpenMP pools can hang).
    torch.set_num_threads(1)


def project_files(sources: Sequence[Path], targets: Sequence[Path], pano_hw: tuple[int, int], size: int,
                  fov_deg: float, band: bool, batch_size: int, workers: int, label: str | None = None) -> None:
    """Project every `sources[i]` to the image `targets[i]`, at most `batch_size` images per task on `workers`
    processes (fewer per task when that keeps every worker busy: the bytes do not depend on it).

    With one worker (or a single batch) everything runs in this process, on `workers` torch threads.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    step = max(1, min(int(batch_size), math.ceil(len(sources) / max(1, workers))))
    batches = [(list(sources[i:i + step]), list(targets[i:i + step])) for i in range(0, len(sources), step)]
    progress = Progress(len(sources), label) if label else None
    args = (tuple(pano_hw), int(size), float(fov_deg), bool(band))
    if workers <= 1 or len(batches) <= 1:
        torch.set_num_threads(max(1, workers))
        for src, dst in batches:
            done = project_batch(src, dst, *args)
            if progress:
                progress.update(done)
        return
    pool = ProcessPoolExecutor(min(workers, len(batches)), initializer=_single_torch_thread)
    try:
        futures: list[Future[int]] = [pool.submit(project_batch, src, dst, *args) for src, dst in batches]
        for future in as_completed(futures):
            done = future.result()  # re-raises a worker's error (e.g. an undecodable file, named)
            if progress:
                progress.update(done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: drop the batches not started yet
