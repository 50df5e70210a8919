"""Projection prior for pseudo labels: the pixel descriptors that :mod:`cvgl.labels` fuses into its scores.

Not in the paper (``labels.prior_weight`` > 0; the module docstring of :mod:`cvgl.labels` has the fused score and
what it buys). Each train panorama's raw spherical-transform projection and each train tile are resized to
``labels.prior_size``, cut to the centre disc the satellite encoder sees and standardised per image and channel,
so the pixel similarity of a pair ignores a sensor's gain and offset. Computed once per run (``prior_stage``) and
read back in the embeddings' row order (``read_prior``). It reads only images, never the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.io import decode_to_memmap, read_image_cache, read_parquet
from cvgl.models import centre_disc


def pixel_descriptors(images: np.ndarray, size: int, radius: float | None, batch: int = 256) -> np.ndarray:
    """(N, 3 * P) float32: each image resized to `size` x `size`, its P pixels on the centre disc of `radius`
    (fraction of half the side; None = the whole image), standardised per image and channel."""
    keep = (centre_disc((size, size), radius) if radius else torch.ones(size, size)).bool()
    out = np.empty((len(images), 3 * int(keep.sum())), np.float32)  # filled in place: no list + concatenated copy
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[start:start + batch])).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x[:, :, keep]
        x = (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, keepdim=True) + 1e-6)
        out[start:start + len(x)] = x.reshape(len(x), -1).numpy()
    return out


def prior_stage(projected_dir: Path, satellite_cache: Path, size: int, radius: float | None, out: Path,
                threads: int) -> None:
    """Pixel descriptors of every train projection (`ground-*` shards) and train tile (`satellite-*`)."""
    torch.set_num_threads(max(1, threads))
    index = read_parquet(projected_dir / "index.parquet", ["ground_id", "path"])
    projections = decode_to_memmap([projected_dir / p for p in index.path], (size, size), threads, "load projections")
    s_ids, tiles = read_image_cache(satellite_cache)
    write_embedding_shards(list(index.ground_id), pixel_descriptors(projections, size, radius), out, "ground")
    write_embedding_shards(list(s_ids), pixel_descriptors(tiles, size, radius), out, "satellite")


def read_prior(prior_dir: Path, ground_ids: np.ndarray, satellite_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The prior's descriptors in the row order of the embeddings (both sorted by id); a clear error otherwise."""
    pg_ids, pg = read_embeddings(prior_dir, "ground")
    ps_ids, ps = read_embeddings(prior_dir, "satellite")
    if list(pg_ids) != list(ground_ids) or list(ps_ids) != list(satellite_ids):
        raise ValueError(f"{prior_dir}: its images are not the train images of the embeddings "
                         f"({len(pg_ids)}/{len(ps_ids)} vs {len(ground_ids)}/{len(satellite_ids)})")
    return pg, ps
