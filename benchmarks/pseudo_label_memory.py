"""Peak memory and time of the `pseudo_label` job at a given N, plain and with the projection prior + CSLS.

Writes what the job reads, in the workflow's own formats: a round's train embeddings (N grounds and N
satellites, d = 256 by default, clustered so that neighbours compete as real ones do) and the prior's pixel
descriptors (64 x 64 x 3 = 12,288 values per image, the `labels.prior_size` default), then runs `cvgl
pseudo-label` as the rule does, as a child process, sampling its resident memory every 0.25 s: RSS, and USS
(the pages that are the job's alone, i.e. what it allocated; the rest is shared libraries and page cache).

    python benchmarks/pseudo_label_memory.py --n 35532 --workdir /tmp/plm     # CVUSA's train count
    python benchmarks/pseudo_label_memory.py --n 2000 --threads 2

The stated O(N x D) term is one side's float32 descriptors held at a time (N x 12,288 x 4 bytes: 1.75 GB at
N = 35,532) plus the two sides' embeddings; the rest should stay O(chunk x N).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from cvgl.embed_io import write_embedding_shards

MB = 1024 ** 2


def clustered(n: int, d: int, seed: int, clusters: int = 500, spread: float = 0.35) -> tuple[np.ndarray, ...]:
    """Ground and satellite rows of N locations around a few hundred centres, each view with its own noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    loc = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)).astype(np.float32)
    views = []
    for _ in range(2):
        v = loc + 0.25 * rng.standard_normal((n, d)).astype(np.float32)
        views.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return tuple(views)


def write_inputs(root: Path, n: int, dim: int, prior_dim: int, seed: int) -> None:
    """Embeddings, prior descriptors and an empty labeled table under `root`, as the workflow writes them."""
    g_ids = [f"g{i:06d}" for i in range(n)]
    s_ids = [f"s{i:06d}" for i in range(n)]
    ground, satellite = clustered(n, dim, seed)
    write_embedding_shards(g_ids, ground, root / "embeddings", "ground")
    write_embedding_shards(s_ids, satellite, root / "embeddings", "satellite")
    del ground, satellite
    rng = np.random.default_rng(seed + 1)
    for prefix, ids in (("ground", g_ids), ("satellite", s_ids)):
        # Pixel values in [0, 1] as `pixel_descriptors` writes them; one side at a time, as the job reads them.
        write_embedding_shards(ids, rng.random((n, prior_dim), dtype=np.float32), root / "prior", prefix)
    pd.DataFrame({"ground_id": pd.Series([], dtype=str), "satellite_id": pd.Series([], dtype=str)}).to_parquet(
        root / "labeled.parquet")


def run_measured(cmd: list[str], log: Path) -> dict[str, float]:
    """Wall seconds and peak RSS / USS (MB, summed over the process tree) of one command."""
    peak = {"rss": 0.0, "uss": 0.0}
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in tree)
                    uss = sum(p.memory_full_info().uss for p in tree)
                except psutil.Error:
                    break
                peak["rss"], peak["uss"] = max(peak["rss"], rss / MB), max(peak["uss"], uss / MB)
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        done.set()
        sampler.join()
        wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({rc}); see {log}")
    return {"seconds": round(wall, 1), "peak_rss_mb": round(peak["rss"]), "peak_uss_mb": round(peak["uss"])}


def label_config(prior: bool, metric: str) -> dict[str, object]:
    """The slice the rule passes (`round_settings` + `labels`), round 1 of 1, exact matching."""
    cfg: dict[str, object] = {"t0": 0.05, "rounds": 1, "index": "Flat", "chunk": 4096, "symmetries": 1,
                              "prior_weight": 0.0, "csls_k": 0, "prior_metric": metric}
    if prior:
        cfg.update(prior_weight=2.0, csls_k=10)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=35_532)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--prior-dim", type=int, default=64 * 64 * 3)
    ap.add_argument("--metric", default="correlation", choices=["l1", "correlation"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cvgl-pseudo-label-memory"))
    ap.add_argument("--keep", action="store_true", help="keep the written inputs")
    a = ap.parse_args()
    root = a.workdir
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    write_inputs(root, a.n, a.dim, a.prior_dim, seed=0)
    print(f"inputs for N = {a.n:,} written in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    rows = []
    for name, prior in (("plain", False), (f"prior ({a.metric}) + CSLS", True)):
        cmd = [sys.executable, "-m", "cvgl", "pseudo-label", "--embeddings", str(root / "embeddings"),
               "--labeled", str(root / "labeled.parquet"), "--round", "1",
               "--config", json.dumps(label_config(prior, a.metric)), "--out", str(root / f"{name[:5]}.parquet"),
               "--threads", str(a.threads), "--device", "cpu"]
        if prior:
            cmd += ["--prior", str(root / "prior")]
        rows.append({"matching": name, **run_measured(cmd, root / f"{name[:5]}.log")})
        print(rows[-1], file=sys.stderr)
    table = pd.DataFrame(rows).set_index("matching")
    descriptors_mb = a.n * a.prior_dim * 4 / MB
    print(f"\npseudo_label at N = {a.n:,} (d = {a.dim}, prior {a.prior_dim}-d, {a.threads} threads, CPU)")
    print(table.to_string())
    extra = table.peak_rss_mb.iloc[-1] - table.peak_rss_mb.iloc[0]
    print(f"the prior's descriptors (the stated O(N x D) term, both sides): {2 * descriptors_mb:,.0f} MB; "
          f"peak RSS of prior + CSLS over plain: {extra:,.0f} MB ({extra / (2 * descriptors_mb):.2f}x)")
    if not a.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
