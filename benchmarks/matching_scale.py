"""Pseudo-label matching at scale: the official dense approach against cvgl's, on the same embeddings.

Synthetic clustered embeddings (d = 512): N locations drawn around a few hundred cluster centres, each seen
once by a ground and once by a satellite embedding with independent noise, so nearest neighbours compete
inside clusters as real ones do. In one process, per N:

* dense (docs/method.md §5.2, official): D = G Sᵀ and Dᵀ = S Gᵀ as two N x N float32 matrices, argmaxes of both,
  top-2 by partition on the mutual rows; skipped (and said so) where the two matrices cannot fit in memory;
* cvgl exact (`cvgl.labels.mutual_matches` on plain scores): one blocked N x N product, row top-2 and a running
  column max;
* cvgl approximate (`mutual_matches_faiss` with IVF indices in both directions), at the largest N, with its
  kept-pair agreement against exact matching on a random subsample of grounds.

Wall time and peak resident memory (sampled) of each, ratios, and the label agreement (kept pairs at margin
threshold t; disagreements whose deciding similarities differ by < 1e-5 are counted apart as near-ties).

    python benchmarks/matching_scale.py                          # N = 10,000, 35,532, 90,618 + 1,000,000 approx
    python benchmarks/matching_scale.py --sizes 10000 --approx 200000 --threads 2
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cvgl.index import build_index, set_threads, similarity_blocks
from cvgl.labels import Matches, mutual_matches, mutual_matches_faiss

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakMemory:
    """Peak RSS above the level at entry, sampled every 5 ms by a background thread."""

    def __enter__(self) -> PeakMemory:
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def gb(self) -> float:
        return (self.peak - self.base) / 1e9


def clustered_embeddings(n: int, d: int, seed: int, clusters: int = 500, spread: float = 0.35,
                         noise: float = 0.7, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """(ground, satellite) float32 unit rows; row i of each is location i. Generated in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32) / np.sqrt(d)
    g, s = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        base = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, d), np.float32) / np.sqrt(d)
        for out in (g, s):
            x = base + noise * rng.standard_normal((m, d), np.float32) / np.sqrt(d)
            out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return g, s


def dense_official(g: np.ndarray, s: np.ndarray) -> Matches:
    """The official implementation's shape: two dense N x N products, argmaxes, partition of mutual rows."""
    d = g @ s.T
    dt = s @ g.T
    top1 = d.argmax(axis=1)
    reverse = dt.argmax(axis=1)
    del dt
    mutual = reverse[top1] == np.arange(len(g))
    score = d[np.arange(len(g)), top1]
    second = np.full(len(g), -np.inf, np.float32)
    rows = np.flatnonzero(mutual)
    if len(rows):
        second[rows] = np.partition(d[rows], -2, axis=1)[:, -2]
    return Matches(top1.astype(np.int64), score, second, mutual, reverse.astype(np.int64))


def kept(m: Matches, t: float) -> np.ndarray:
    """-1 where not kept, else the kept satellite row."""
    return np.where(m.mutual & (m.margin >= np.float32(t)), m.top1, -1)


def compare(a: Matches, b: Matches, t: float) -> dict[str, int]:
    """Kept-pair agreement; a disagreement whose margin is within 1e-5 of t or of 0 counts as a near-tie."""
    ka, kb = kept(a, t), kept(b, t)
    differ = np.flatnonzero(ka != kb)
    near = np.minimum.reduce([np.abs(a.margin[differ] - t), np.abs(b.margin[differ] - t),
                              np.abs(a.margin[differ]), np.abs(b.margin[differ])]) < 1e-5
    return {"kept": int((ka >= 0).sum()), "identical": int((ka == kb).sum()), "near_tie": int(near.sum()),
            "other": int((~near).sum())}


def timed(fn: Callable[[], Matches]) -> tuple[Matches, float, float]:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return out, wall, mem.gb


def exact_on_subsample(g: np.ndarray, s: np.ndarray, rows: np.ndarray, chunk: int = 512) -> Matches:
    """Exact matches of some grounds: their row top-2 over all satellites, and each chosen satellite's best ground
    over all grounds (so `mutual` is exact for those rows)."""
    top1 = np.empty(len(rows), np.int64)
    score = np.empty(len(rows), np.float32)
    second = np.empty(len(rows), np.float32)
    for start, sims in similarity_blocks(g[rows], s, chunk):
        v, i = sims.topk(2, dim=1)
        top1[start:start + len(v)], score[start:start + len(v)] = i[:, 0].numpy(), v[:, 0].numpy()
        second[start:start + len(v)] = v[:, 1].numpy()
    reverse = np.empty(len(rows), np.int64)
    for start, sims in similarity_blocks(s[top1], g, chunk):
        reverse[start:start + len(sims)] = sims.argmax(dim=1).numpy()
    return Matches(top1, score, second, reverse == rows, reverse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 35_532, 90_618])
    ap.add_argument("--approx", type=int, default=1_000_000, help="N for the approximate run (0: skip)")
    ap.add_argument("--factory", default="IVF1024,Flat")
    ap.add_argument("--search", default="nprobe=16")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--t", type=float, default=0.05, help="margin threshold of the kept pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-gb", type=float, default=20.0, help="skip the dense approach above this estimate")
    ap.add_argument("--subsample", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    set_threads(a.threads)
    print(f"d = {a.d}, threads = {a.threads}, margin threshold {a.t}")
    for n in a.sizes:
        g, s = clustered_embeddings(n, a.d, seed=n)
        ours, t_ours, m_ours = timed(lambda g=g, s=s: mutual_matches(g, s, chunk=4096))
        line = f"N = {n:>9,}: cvgl exact {t_ours:7.1f} s {m_ours:6.2f} GB"
        need = 2 * n * n * 4 / 1e9
        if need > a.memory_gb:
            print(line + f" | dense skipped: its two N x N matrices need {need:.0f} GB")
            continue
        dense, t_dense, m_dense = timed(lambda g=g, s=s: dense_official(g, s))
        c = compare(dense, ours, a.t)
        print(line + f" | dense {t_dense:7.1f} s {m_dense:6.2f} GB | speed-up {t_dense / t_ours:4.1f}x, memory "
              f"{m_ours / max(m_dense, 1e-9):.3f} of dense | kept {c['kept']:,}, identical rows "
              f"{c['identical']:,}/{n:,}, near-tie differences {c['near_tie']}, other {c['other']}")
    if a.approx:
        n = a.approx
        t0 = time.perf_counter()
        g, s = clustered_embeddings(n, a.d, seed=n)
        print(f"N = {n:>9,}: embeddings generated in {time.perf_counter() - t0:.0f} s")

        def approx() -> Matches:
            index = build_index(s, a.factory, a.search)
            return mutual_matches_faiss(g, s, index, reverse_factory=a.factory, search=a.search)

        got, t_app, m_app = timed(approx)
        rows = np.sort(np.random.default_rng(0).choice(n, a.subsample, replace=False))
        exact = exact_on_subsample(g, s, rows)
        sub = Matches(got.top1[rows], got.score[rows], got.second_score[rows], got.mutual[rows], got.reverse_top1)
        ke, ka = kept(exact, a.t), kept(sub, a.t)
        both = (ke >= 0) | (ka >= 0)
        agree = int(((ke == ka) & both).sum())
        print(f"N = {n:>9,}: cvgl approximate ({a.factory}, {a.search}) {t_app:7.1f} s {m_app:6.2f} GB | on "
              f"{a.subsample:,} random grounds: kept exact {int((ke >= 0).sum())}, approx {int((ka >= 0).sum())}, "
              f"agreeing {agree} of {int(both.sum())} kept by either ({100 * agree / max(1, both.sum()):.1f}%)")


if __name__ == "__main__":
    main()
