"""Retrieval metrics (docs/method.md §6): ranks of the true reference, Recall@K and Recall@1%."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cvgl.index import as_embedding_matrix, similarity_blocks


def retrieval_ranks(query: np.ndarray, reference: np.ndarray, positive: np.ndarray, chunk: int = 4096,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """rank[q] = #{r : sim(q, r) > sim(q, positive[q])}: 0 means the true reference is retrieved first.

    Strict comparison, so references tied with the truth do not push it down (ties favour the truth). The true
    score is read from the same similarity block as the others, so it ties with an identical reference exactly.
    Computed in blocks of `chunk` queries (`ranked_retrievals`); the Q x R matrix never exists.
    """
    ranks = ranked_retrievals(query, reference, 1, positive, chunk, device)[2]
    assert ranks is not None
    return ranks


def ranked_retrievals(query: np.ndarray, reference: np.ndarray, k: int, positive: np.ndarray | None = None,
                      chunk: int = 4096, device: str | torch.device = "cpu"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each query's `k` best references (rows, scores; best first, ties to the lower row) and, given `positive`,
    the rank of its true reference as `retrieval_ranks` counts it: one blocked pass, memory O(chunk x R)."""
    query = as_embedding_matrix(query, "query embeddings")
    reference = as_embedding_matrix(reference, "reference embeddings")
    if positive is not None:
        positive = np.asarray(positive)
        if positive.shape != (len(query),):
            raise ValueError(f"positive must have shape ({len(query)},), got {positive.shape}")
        if len(positive) and (positive.min() < 0 or positive.max() >= len(reference)):
            raise ValueError(f"positive rows must lie in 0..{len(reference) - 1}")
    k = max(1, min(int(k), len(reference)))
    top = np.empty((len(query), k), dtype=np.int64)
    scores = np.empty((len(query), k), dtype=np.float32)
    ranks = None if positive is None else np.empty(len(query), dtype=np.int64)
    truth = None if positive is None else torch.from_numpy(np.asarray(positive, dtype=np.int64)).to(device)
    for start, sims in similarity_blocks(query, reference, chunk, device):
        rows = slice(start, start + len(sims))
        if truth is not None and ranks is not None:
            ranks[rows] = (sims > sims.gather(1, truth[rows, None])).sum(dim=1).cpu().numpy()
        # A stable descending sort breaks ties towards the lower row, so the table does not depend on the device.
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
        top[rows] = order.cpu().numpy()
        scores[rows] = sims.gather(1, order).cpu().numpy()
    return top, scores, ranks


def distance_metrics(errors_m: np.ndarray, radii_m: Sequence[float]) -> dict[str, float]:
    """Share of queries whose top-1 lies within each radius of the query (`R@<r>m`) and the median top-1 error;
    queries without coordinates (NaN) are left out; {} when none has them."""
    errors_m = np.asarray(errors_m, dtype=np.float64)
    known = errors_m[np.isfinite(errors_m)]
    if known.size == 0:
        return {}
    out = {f"R@{r:g}m": float(np.mean(known <= r)) for r in radii_m}
    out["median_error_m"] = float(np.median(known))
    return out


def recall_at_k(ranks: np.ndarray, gallery_size: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@k": fraction of queries with rank < k} for each k, plus "R@1%" with k = max(1, floor(gallery / 100))."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("recall_at_k: no queries")
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    recalls = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    recalls["R@1%"] = float(np.mean(ranks < max(1, gallery_size // 100)))
    return recalls


def hit_rate(query: np.ndarray, reference: np.ndarray, positive: np.ndarray, semi_positive: np.ndarray,
             chunk: int = 4096, device: str | torch.device = "cpu") -> float:
    """VIGOR hit rate (docs/method.md §6): share of queries whose positive is outranked by none but its semi-positives.

    `semi_positive` is (Q, S) reference rows, -1 for none. Stricter than "top-1 is a positive or semi-positive":
    a semi-positive first and an unrelated tile before the positive is a miss. Blocked like `retrieval_ranks`.
    """
    query = as_embedding_matrix(query, "query embeddings")
    reference = as_embedding_matrix(reference, "reference embeddings")
    semi = np.asarray(semi_positive, dtype=np.int64).reshape(len(query), -1)
    truth = torch.from_numpy(np.asarray(positive, dtype=np.int64)).to(device)
    semi_t = torch.from_numpy(semi).to(device)
    hits = 0
    for start, sims in similarity_blocks(query, reference, chunk, device):
        rows = slice(start, start + len(sims))
        above = sims > sims.gather(1, truth[rows, None])
        s = semi_t[rows]
        is_semi = torch.zeros(above.shape, dtype=torch.int64, device=above.device)
        is_semi.scatter_add_(1, s.clamp_min(0), (s >= 0).long())  # padding (-1) adds 0
        above &= is_semi == 0  # semi-positives may outrank the positive
        hits += int((above.sum(dim=1) == 0).sum())
    return hits / len(query)
