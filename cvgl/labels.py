"""Adaptive Mutual Matching (docs/method.md §5): pseudo pairs from mutual nearest neighbours and a margin curriculum.

A ground image g gets its top-1 satellite a*(g). The pair is kept when it is mutual (g is also that satellite's
top-1 ground) and confident (top-1 minus top-2 similarity >= a threshold that relaxes over the self-training
rounds). Mutual nearest neighbours are one-to-one, so kept pseudo pairs never share a satellite.

The scores matched are the network's cosine similarities, with two options (neither in the paper):

* The projection prior (``labels.prior_weight`` w > 0), a learning-free second opinion. The spherical-transform
  projection of a panorama reproduces its satellite tile near the camera (``cvgl.geometry``), so the pixels of
  the projection and of a tile, compared on the centre disc the satellite encoder sees (the descriptors of
  :mod:`cvgl.prior`), say something about a pair that the cold-start network does not: their errors are nearly
  independent. The scores become

      fused(g, s) = sigma * (z_net(g, s) + w * z_pixel(g, s)) / (1 + w)

  where z_net and z_pixel are each ground's similarities to every train tile standardised over its row (so the
  two scales meet), and sigma, the mean row standard deviation of the network similarities, brings the fused
  score back to cosine units so that the margin thresholds (``rounds.t0``) keep their meaning. The pixel
  similarity is the negative mean absolute difference of per-image, per-channel standardised pixels (robust to a
  sensor's gain and offset, and to the facades and crowns that a projection smears; ``labels.prior_metric:
  l1``) or their correlation (``correlation``: one matrix product, which a CPU runs ~20-30x faster than the
  absolute differences, so the prior stays affordable at CVUSA's size without a GPU). It reads only images,
  never the truth. On the default synthetic world, w = 2 turns the default cold start's first labels from 19
  correct of 76 kept (25 %) into 80 of 115 (70 %), and a 40-epoch cold start's from 68 of 105 (65 %) into 77 of
  94 (82 %) (docs/results.md, "the projection prior"). Either metric costs an O(N x M x D) pass per round (D = 3
  x the disc's pixels at ``labels.prior_size``) plus a second pass of the network similarities for sigma, cheap
  for thousands of images, minutes on a GPU for CVUSA's 35,532 pairs.
* CSLS (``labels.csls_k`` K > 0): each score minus half the mean of its ground's and half that of its tile's K
  best scores (:func:`csls_blocks`), which pulls hubs back.

Both options exist only on exact scores (``labels.index: Flat``): :func:`mutual_matches` computes the scores
block by block in one pass; :func:`mutual_matches_faiss` matches the plain similarities through FAISS indices.

Ties are broken towards the lowest row index everywhere; since callers sort rows by image id, the labels depend
only on the ids, never on the order the images were listed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
import torch

from cvgl.index import as_embedding_matrix, build_index, similarity_blocks

#: `rounds.threshold_schedule` values: the paper's relaxing curriculum, or t0 in every round (its ablation).
THRESHOLD_SCHEDULES = ("cosine", "constant")


def margin_threshold(round_index: int, t0: float, rounds: int, schedule: str = "cosine") -> float:
    """Margin threshold of self-training round `round_index` (1..rounds): t0 * ½(1 + cos(π (round - 1) / rounds)).

    Round 1 is the strictest (t0); the threshold relaxes towards 0 but stays > 0 in the last round, so a ground
    whose top-1 and top-2 scores tie exactly is never kept. `schedule` "constant" keeps t0 in every round (the
    paper's "without curriculum" ablation).
    """
    if schedule not in THRESHOLD_SCHEDULES:
        raise ValueError(f"rounds.threshold_schedule must be one of {list(THRESHOLD_SCHEDULES)}, got {schedule!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not 1 <= round_index <= rounds:
        raise ValueError(f"round_index must be in 1..{rounds}, got {round_index}")
    if t0 < 0:
        raise ValueError(f"t0 must be >= 0, got {t0}")
    if schedule == "constant":
        return t0
    return t0 * 0.5 * (1.0 + math.cos(math.pi * (round_index - 1) / rounds))


@dataclass
class Matches:
    """Nearest-neighbour structure of the ground x satellite similarity matrix (rows = grounds)."""

    top1: np.ndarray          # (N,) int64: each ground's best satellite row
    score: np.ndarray         # (N,) float32: its similarity
    second_score: np.ndarray  # (N,) float32: best similarity among the other satellites (-inf when M == 1)
    mutual: np.ndarray        # (N,) bool: reverse_top1[top1[g]] == g
    reverse_top1: np.ndarray  # (M,) int64: each satellite's best ground row

    @property
    def margin(self) -> np.ndarray:
        """top-1 minus top-2 similarity (float32; +inf when there is a single satellite)."""
        return self.score - self.second_score


def check_pair(ground: np.ndarray, satellite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ground = as_embedding_matrix(ground, "ground embeddings")
    satellite = as_embedding_matrix(satellite, "satellite embeddings")
    if len(ground) == 0 or len(satellite) == 0:
        raise ValueError(f"matching needs at least one ground and one satellite, got {len(ground)} and "
                         f"{len(satellite)}")
    if ground.shape[1] != satellite.shape[1]:
        raise ValueError(f"dimension mismatch: grounds d={ground.shape[1]}, satellites d={satellite.shape[1]}")
    return ground, satellite


def _is_mutual(top1: np.ndarray, reverse_top1: np.ndarray) -> np.ndarray:
    return reverse_top1[top1] == np.arange(len(top1))


def matches_from_blocks(blocks: Iterable[tuple[int, torch.Tensor]], n: int, m: int,
                        device: str | torch.device = "cpu") -> Matches:
    """`Matches` of an N x M score matrix given as consecutive blocks of rows `(start, block)`.

    Exact ties go to the lowest row index in both directions: `argmax` returns the first maximum within a block,
    and the running column maximum is only replaced by a strictly greater score from a later block. The
    second score is the best among the satellites other than top-1, so a tied runner-up gives margin 0.
    Blocks are modified in place.
    """
    top1 = np.empty(n, dtype=np.int64)
    score = np.empty(n, dtype=np.float32)
    second = np.empty(n, dtype=np.float32)
    col_best = torch.full((m,), -math.inf, device=device)
    col_arg = torch.zeros(m, dtype=torch.int64, device=device)
    for start, sims in blocks:
        rows = slice(start, start + len(sims))
        # Column direction first: the row pass below overwrites the top-1 entries in place.
        block_arg = sims.argmax(dim=0)
        block_best = sims.gather(0, block_arg[None])[0]
        better = block_best > col_best
        col_best = torch.where(better, block_best, col_best)
        col_arg = torch.where(better, block_arg + start, col_arg)
        best = sims.argmax(dim=1, keepdim=True)
        top1[rows] = best[:, 0].cpu().numpy()
        score[rows] = sims.gather(1, best)[:, 0].cpu().numpy()
        # Mask only the top-1 column (not its ties); with M == 1 every entry is masked and the max is -inf.
        sims.scatter_(1, best, -math.inf)
        second[rows] = sims.max(dim=1).values.cpu().numpy()
    reverse_top1 = col_arg.cpu().numpy()
    return Matches(top1, score, second, _is_mutual(top1, reverse_top1), reverse_top1)


def csls_blocks(make_blocks: Callable[[], Iterable[tuple[int, torch.Tensor]]], n: int, m: int, k: int
                ) -> Iterator[tuple[int, torch.Tensor]]:
    """Hubness-corrected scores s_ij - (r_g(i) + r_s(j)) / 2 of an N x M score matrix given block by block.

    Cross-domain similarity local scaling (CSLS, Conneau et al. 2018, "Word translation without parallel data"):
    r_g(i) is the mean of ground i's k best scores and r_s(j) that of satellite j's. A hub (a tile close to many
    panoramas) is everyone's top-1 but mutual with one of them at most; scaling pulls it back so mutual nearest
    neighbours form around the right pairs. Scores stay in the input's units (margins keep their meaning).
    `make_blocks()` is iterated twice (statistics, then scores); memory O(chunk x M + k x M).
    """
    if k < 1:
        raise ValueError(f"labels.csls_k must be >= 1 to rescale, got {k}")
    k_row, k_col = min(k, m), min(k, n)
    row_mean: torch.Tensor | None = None
    col_top: torch.Tensor | None = None
    for start, sims in make_blocks():  # statistics stay on the blocks' device
        if row_mean is None or col_top is None:
            row_mean = torch.empty(n, device=sims.device)
            col_top = torch.full((k_col, m), -math.inf, device=sims.device)
        row_mean[start:start + len(sims)] = sims.topk(k_row, dim=1).values.mean(dim=1)
        # The block's own top k first: the same values as the top k of everything, without a copy of the block.
        col_top = torch.cat([col_top, sims.topk(min(k_col, len(sims)), dim=0).values]).topk(k_col, dim=0).values
    if row_mean is None or col_top is None:
        return
    col_half = col_top.mean(dim=0) / 2
    for start, sims in make_blocks():
        yield start, sims.sub_(row_mean[start:start + len(sims), None] / 2).sub_(col_half[None])


def _standardise_rows(block: torch.Tensor) -> torch.Tensor:
    """Each row minus its mean, over its standard deviation (so two score matrices' rows can be added); in
    place, as a block is chunk x M."""
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


def mutual_matches(ground: np.ndarray, satellite: np.ndarray, chunk: int = 4096, *,
                   prior: tuple[np.ndarray, np.ndarray] | None = None, prior_weight: float = 0.0,
                   prior_metric: str = "l1", csls_k: int = 0, device: str | torch.device = "cpu") -> Matches:
    """Exact mutual matches: row top-1/top-2 and column top-1 of the pseudo-label scores in one blocked pass.

    The scores are ground @ satellite.T, fused with the projection prior's `(ground, satellite)` descriptors when
    `prior_weight` > 0 (compared by `prior_metric`) and rescaled by CSLS when `csls_k` > 0 (`score_blocks`, the
    module docstring); memory O(chunk x M + N + M), on `device` (a GPU where the job has one).
    """
    blocks = score_blocks(ground, satellite, chunk, prior, prior_weight, csls_k, device, prior_metric)
    return matches_from_blocks(blocks, len(ground), len(satellite), device)


def mutual_matches_faiss(ground: np.ndarray, satellite: np.ndarray, index: faiss.Index | None = None,
                         reverse_factory: str = "Flat", search: str | None = None) -> Matches:
    """`mutual_matches` through FAISS searches: satellites indexed (k=2 per ground), grounds indexed (k=1).

    `index` may be a prebuilt satellite index (faiss id = satellite row); without one an exact "Flat" index is
    built. With an exact index the result equals plain `mutual_matches` on data without exact ties. Tie behaviour:
    the k=1 satellite search returns the lowest tied ground id, and a top-1 tie among grounds' satellites is
    resolved to the lower of the two returned ids; both rely on how FAISS's result heaps order equal scores
    (observed for flat indices in faiss 1.15, not a documented FAISS guarantee). FAISS's scores may also differ
    from torch's in the last bit, so near-ties can resolve differently. An approximate index (IVF, HNSW) gives
    approximate matches. The reverse direction (each satellite's best ground) searches an index of the grounds
    built with `reverse_factory` and `search`: with an approximate one neither direction is O(N * M).
    """
    ground, satellite = check_pair(ground, satellite)
    n, m = len(ground), len(satellite)
    if index is None:
        index = build_index(satellite)
    elif index.ntotal != m:
        raise ValueError(f"satellite index holds {index.ntotal} vectors but {m} satellite rows were given")
    scores, rows = index.search(ground, min(2, m))
    if (rows[:, 0] < 0).any():
        raise ValueError("the satellite index returned no neighbour for some grounds (too few probes?)")
    top1 = rows[:, 0].astype(np.int64)
    second = np.full(n, -np.inf, dtype=np.float32)
    if m > 1:
        # FAISS marks a missing result with id -1; leave the second score at -inf there.
        second = np.where(rows[:, 1] >= 0, scores[:, 1], second).astype(np.float32)
        # With k >= 2 FAISS keeps the lowest ids of a tied set but lists them highest id first; restore the
        # lowest-row rule for a top-1 tie.
        tied = (rows[:, 1] >= 0) & (scores[:, 1] == scores[:, 0])
        top1 = np.where(tied, np.minimum(rows[:, 0], rows[:, 1]), top1)
    _, reverse = build_index(ground, reverse_factory, search).search(satellite, 1)
    reverse_top1 = reverse[:, 0].astype(np.int64)
    return Matches(top1, scores[:, 0].astype(np.float32), second, _is_mutual(top1, reverse_top1), reverse_top1)


def _id_array(ids: Sequence[str], name: str, expected: int) -> np.ndarray:
    ids = np.asarray([str(i) for i in ids], dtype=object)
    if len(ids) != expected:
        raise ValueError(f"{name}: {len(ids)} ids for {expected} embedding rows")
    if len(pd.unique(ids)) != len(ids):
        raise ValueError(f"{name}: image ids are not unique")
    return ids


def _apply_labeled(table: pd.DataFrame, labeled: pd.DataFrame, satellite_ids: np.ndarray) -> pd.DataFrame:
    """Override rows with the labeled pairs and un-keep pseudo rows that claim a labeled satellite."""
    for column in ("ground_id", "satellite_id"):
        if column not in labeled.columns:
            raise ValueError(f"labeled pairs: missing column '{column}'; found {list(labeled.columns)}")
    pairs = labeled[["ground_id", "satellite_id"]].astype(str).drop_duplicates()
    conflicting = pairs["ground_id"][pairs["ground_id"].duplicated()]
    if len(conflicting):
        raise ValueError(f"labeled pairs: ground {conflicting.iloc[0]!r} is paired with several satellites")
    rows = pd.Index(table["ground_id"]).get_indexer(pairs["ground_id"])
    if (rows < 0).any():
        raise ValueError(f"labeled pairs: ground {pairs['ground_id'].iloc[np.argmax(rows < 0)]!r} is not among "
                         "the matched grounds")
    unknown = ~pairs["satellite_id"].isin(satellite_ids)
    if unknown.any():
        raise ValueError(f"labeled pairs: satellite {pairs['satellite_id'][unknown].iloc[0]!r} is not among "
                         "the matched satellites")
    table = table.copy()
    table.loc[rows, "satellite_id"] = pairs["satellite_id"].to_numpy()
    table.loc[rows, "kept"] = True
    table.loc[rows, "source"] = "labeled"
    # One satellite, one ground: a labeled satellite cannot also be the pseudo target of another ground.
    claims_labeled = (table["source"] == "pseudo") & table["satellite_id"].isin(pairs["satellite_id"])
    table.loc[claims_labeled, "kept"] = False
    return table


def build_label_table(ground_ids: Sequence[str], satellite_ids: Sequence[str], matches: Matches,
                      threshold: float, labeled: pd.DataFrame | None = None, require_mutual: bool = True
                      ) -> pd.DataFrame:
    """The labels.parquet table: one row per ground (sorted by ground_id) with its top-1 satellite and verdict.

    kept = mutual & (margin >= threshold), compared in float32 so it can be recomputed from the stored columns.
    With `require_mutual` False (`labels.mutual: false`, the paper's "without mutual matching" ablation) every
    ground's top-1 is a candidate: kept = margin >= threshold. (`labels.margin_filter: false` is threshold 0.)
    Labeled pairs (semi-supervised mode) override their grounds' rows (satellite_id, kept = True,
    source = "labeled"); their score, second_score, margin and mutual still describe the model's own top-1.
    """
    ground_ids = _id_array(ground_ids, "ground_ids", len(matches.top1))
    satellite_ids = _id_array(satellite_ids, "satellite_ids", len(matches.reverse_top1))
    threshold32 = np.float32(threshold)
    margin = matches.margin.astype(np.float32)
    n = len(ground_ids)
    table = pd.DataFrame({
        "ground_id": ground_ids,
        "satellite_id": satellite_ids[matches.top1],
        "score": matches.score.astype(np.float32),
        "second_score": matches.second_score.astype(np.float32),
        "margin": margin,
        "mutual": matches.mutual.astype(bool),
        "threshold": np.full(n, threshold32, dtype=np.float32),
        "kept": (matches.mutual.astype(bool) | (not require_mutual)) & (margin >= threshold32),
        "source": np.full(n, "pseudo", dtype=object),
        "correct": pd.array([pd.NA] * n, dtype="boolean"),
    })
    if labeled is not None and len(labeled):
        table = _apply_labeled(table, labeled, satellite_ids)
    return table.sort_values("ground_id", kind="stable", ignore_index=True)
