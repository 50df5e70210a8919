"""Localize throughput against a million-tile gallery: the gallery index `cvgl localize` builds, searched.

Synthetic clustered embeddings (unit rows, d = 256 by default): gallery tiles drawn around a few thousand cluster
centres (tiles of one area look alike, as real ones do), and each query a noisy copy of one gallery tile, so the
nearest neighbours compete inside clusters. The gallery index is built with `cvgl.index.build_index` from a
FAISS factory string, as `cvgl localize --index` does, and searched with the queries in batches; an exact
(`Flat`) search of a random subsample of the queries gives the agreement: the share whose approximate top-1 is
the exact top-1, and the mean overlap of the two top-10 sets. Query embedding (the network's forward) is not
timed here: it depends on the backbone and the device, not the gallery.

    python benchmarks/localize_scale.py                                   # 1,000,000 tiles, IVF1024,Flat
    python benchmarks/localize_scale.py --gallery 200000 --index HNSW32 --search efSearch=64
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cvgl.index import build_index, set_threads


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_gallery(n: int, dim: int, clusters: int, rng: np.random.Generator, chunk: int = 100_000
                      ) -> np.ndarray:
    """n unit rows around `clusters` random centres (spread 0.5 of a centre's norm), built in chunks."""
    centres = unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        noise = rng.standard_normal((m, dim), dtype=np.float32) * (0.5 / np.sqrt(dim))
        out[start:start + m] = unit(centres[rng.integers(0, clusters, m)] + noise)
    return out


def search_all(index, queries: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, float]:
    """Top-k rows of every query, batch by batch as localize streams them; returns (rows, seconds)."""
    rows = np.empty((len(queries), k), np.int64)
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        _, rows[i:i + batch] = index.search(queries[i:i + batch], k)
    return rows, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gallery", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=4096)
    ap.add_argument("--index", default="IVF1024,Flat")
    ap.add_argument("--search", default="nprobe=16")
    ap.add_argument("--exact-sample", type=int, default=1000, help="queries also searched exactly (Flat)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    set_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    gallery = clustered_gallery(a.gallery, a.dim, a.clusters, rng)
    truth = rng.integers(0, a.gallery, a.queries)
    queries = unit(gallery[truth] + rng.standard_normal((a.queries, a.dim), dtype=np.float32) * (0.3 / np.sqrt(a.dim)))
    print(f"gallery {a.gallery:,} x {a.dim}, {a.queries:,} queries, {a.threads} threads")
    t = time.perf_counter()
    index = build_index(gallery, a.index, a.search)
    build = time.perf_counter() - t
    rows, seconds = search_all(index, queries, 10, a.batch)
    print(f"{a.index} ({a.search}): built in {build:.1f} s; {a.queries / seconds:,.0f} queries/s "
          f"({1e3 * seconds / a.queries:.2f} ms each)")
    sample = rng.choice(a.queries, size=min(a.exact_sample, a.queries), replace=False)
    exact = build_index(gallery, "Flat")
    exact_rows, exact_seconds = search_all(exact, queries[sample], 10, a.batch)
    top1 = float(np.mean(rows[sample, 0] == exact_rows[:, 0]))
    overlap = float(np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows[sample], exact_rows, strict=True)]))
    speedup = (exact_seconds / len(sample)) / (seconds / a.queries)
    print(f"Flat (exact): {len(sample) / exact_seconds:,.0f} queries/s; the index is x{speedup:.1f} faster")
    print(f"agreement on {len(sample):,} queries: top-1 {100 * top1:.1f}%, top-10 overlap {100 * overlap:.1f}%; "
          f"exact top-1 is the query's own tile for {100 * np.mean(exact_rows[:, 0] == truth[sample]):.1f}%")


if __name__ == "__main__":
    main()
