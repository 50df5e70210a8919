"""Projection prior for pseudo labels: a learning-free second opinion fused into Adaptive Mutual Matching.

Not in the paper. The spherical-transform projection of a panorama reproduces its satellite tile near the camera
(``cvgl.geometry``), so the pixels of the projection and of a tile, compared on the centre disc the satellite
encoder sees, say something about a pair that the cold-start network does not: their errors are nearly
independent. With ``labels.prior_weight`` w > 0, a round's pseudo labels come from

    fused(g, s) = sigma * (z_net(g, s) + w * z_pixel(g, s)) / (1 + w)

where z_net and z_pixel are each ground's similarities to every train tile standardised over its row (so the
two scales meet), and sigma, the mean row standard deviation of the network similarities, brings the fused score
back to cosine units so that the margin thresholds (``rounds.t0``) keep their meaning. The pixel similarity is
the negative mean absolute difference of per-image, per-channel standardised pixels (robust to a sensor's gain
and offset, and to the facades and crowns that a projection smears; ``labels.prior_metric: l1``) or their
correlation (``correlation``: one matrix product, which a CPU runs ~20-30x faster than the absolute differences,
so the prior stays affordable at CVUSA's size without a GPU). It reads only images, never the truth.

On the default synthetic world, w = 2 turns the default cold start's first labels from 19 correct of 76 kept
(25 %) into 80 of 115 (70 %), and a 40-epoch cold start's from 68 of 105 (65 %) into 77 of 94 (82 %) (docs/results.md,
"the projection prior"). Either metric costs an O(N x M x D) pass per round (D = 3 x the disc's pixels at
``labels.prior_size``) plus a second pass of the network similarities for sigma, cheap for thousands of images,
minutes on a GPU for CVUSA's 35,532 pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cvgl.embed_io import read_embeddings, write_embedding_shards
from cvgl.index import similarity_blocks
from cvgl.io import decode_to_memmap, read_image_cache, read_parquet
from cvgl.labels import Matches, check_pair, csls_blocks, matches_from_blocks
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


def _standardise_rows(block: torch.Tensor) -> torch.Tensor:
    """Each row to mean 0, standard deviation 1, in place (a block is chunk x M: no copies of it)."""
    mean, std = block.mean(dim=1, keepdim=True), block.std(dim=1, keepdim=True).clamp_min(1e-12)
    return block.sub_(mean).div_(std)


def mean_row_std(ground: np.ndarray, satellite: np.ndarray, chunk: int, device: str | torch.device = "cpu"
                 ) -> float:
    """Mean over grounds of the standard deviation of its row of ground @ satellite.T (blocked)."""
    total = 0.0
    for _, block in similarity_blocks(ground, satellite, chunk, device):
        total += float(block.std(dim=1).sum()) if block.shape[1] > 1 else 0.0
    return total / max(1, len(ground))


#: `labels.prior_metric` values: how a block of projections' descriptors scores every tile's.
PRIOR_METRICS = ("l1", "correlation")


def pixel_similarity(ground_block: torch.Tensor, satellite: torch.Tensor, metric: str) -> torch.Tensor:
    """(rows, M) pixel similarity of standardised descriptors: -sum |a - b| (l1) or a . b (correlation, a
    matrix product; for standardised rows a monotone function of -||a - b||^2, so rows rank alike)."""
    if metric == "l1":
        return torch.cdist(ground_block, satellite, p=1).neg_()
    if metric == "correlation":
        return ground_block @ satellite.T
    raise ValueError(f"labels.prior_metric must be one of {list(PRIOR_METRICS)}, got {metric!r}")


def fused_similarity_blocks(ground: np.ndarray, satellite: np.ndarray, prior_ground: np.ndarray,
                            prior_satellite: np.ndarray, weight: float, chunk: int,
                            device: str | torch.device = "cpu", metric: str = "l1"
                            ) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield `(start, fused block)` for consecutive blocks of ground rows (memory O(chunk x M)); see the module."""
    if len(prior_ground) != len(ground) or len(prior_satellite) != len(satellite):
        raise ValueError("the prior needs one descriptor per ground and per satellite")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"labels.prior_weight must be >= 0, got {weight}")
    if metric not in PRIOR_METRICS:
        raise ValueError(f"labels.prior_metric must be one of {list(PRIOR_METRICS)}, got {metric!r}")
    sigma = mean_row_std(ground, satellite, chunk, device)
    ps = torch.from_numpy(prior_satellite).to(device)
    for start, block in similarity_blocks(ground, satellite, chunk, device):
        pixel = pixel_similarity(torch.from_numpy(prior_ground[start:start + chunk]).to(device), ps, metric)
        fused = _standardise_rows(block).add_(_standardise_rows(pixel).mul_(weight))
        del pixel
        yield start, fused.mul_(sigma / (1.0 + weight))


def score_blocks(ground: np.ndarray, satellite: np.ndarray, chunk: int,
                 prior: tuple[np.ndarray, np.ndarray] | None = None, weight: float = 0.0,
                 csls_k: int = 0, device: str | torch.device = "cpu", metric: str = "l1"
                 ) -> Iterator[tuple[int, torch.Tensor]]:
    """The pseudo-label scores of every ground against every satellite, as consecutive blocks of ground rows.

    The network similarities, fused with the projection prior's `(ground, satellite)` descriptors when
    `weight` > 0, rescaled by CSLS over each row's and column's `csls_k` best scores when `csls_k` > 0
    (`csls_blocks`); memory O(chunk x M) either way, on `device` (a GPU where the job has one).
    """
    ground, satellite = check_pair(ground, satellite)
    if weight > 0:
        if prior is None:
            raise ValueError("labels.prior_weight > 0 needs the projection prior's descriptors (--prior)")

        def blocks() -> Iterator[tuple[int, torch.Tensor]]:
            return fused_similarity_blocks(ground, satellite, *prior, weight, chunk, device, metric)
    else:
        def blocks() -> Iterator[tuple[int, torch.Tensor]]:
            return similarity_blocks(ground, satellite, chunk, device)
    return csls_blocks(blocks, len(ground), len(satellite), csls_k) if csls_k > 0 else blocks()


def exact_matches(ground: np.ndarray, satellite: np.ndarray, chunk: int,
                  prior: tuple[np.ndarray, np.ndarray] | None = None, weight: float = 0.0,
                  csls_k: int = 0, device: str | torch.device = "cpu", metric: str = "l1") -> Matches:
    """Exact mutual matches of the train embeddings on their pseudo-label scores (`score_blocks`), on `device`."""
    return matches_from_blocks(score_blocks(ground, satellite, chunk, prior, weight, csls_k, device, metric),
                               len(ground), len(satellite), device)
