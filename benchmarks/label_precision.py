"""How precise are the first pseudo labels, and what raises their precision? (issue 4 diagnostics)

Takes a finished run's cold-start model (`round-0/model.pt`) and its train split, and scores every train panorama
against every train tile with several similarities, then reports for each: train R@1, the mutual nearest neighbours
(how many, share correct), the precision of the top 60/120/240 mutual pairs ranked by their top-1/top-2 margin,
and what Adaptive Mutual Matching keeps at the round-1 threshold `--t0`. Truth is read for these diagnostics only.

Similarities:
* cross, k = 1/2/4/8: ground encoder vs satellite encoder, averaged over k joint symmetries
  (`labels.symmetries`, `cvgl.embed.embed_images`); k = 1 is the plain embedding;
* (cross + fake)/2: also the satellite encoder's similarity between each panorama's translated projection and
  every tile (the cold start's own bridge between the views);
* prior w: what `labels.prior_weight: w` fuses (cvgl/labels.py; descriptors from cvgl/prior.py):
  row-standardised cross similarity plus w x the row-standardised pixel similarity of each raw projection to
  every tile on the centre disc the satellite encoder sees, in cosine units (so the margin threshold `--t0`
  applies as in the workflow).
* csls K: any of the above rescaled against hubs as `labels.csls_k: K` does (`cvgl.labels.score_blocks`).

Under the lines of each k, a grid gives the kept pairs and their precision at several round-1 thresholds.

    python benchmarks/label_precision.py results/synth-unsupervised [--symmetries 1 2 4 8] [--csls 0 5 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cvgl.data.manifest import read_truth
from cvgl.embed import embed_images
from cvgl.io import load_images, read_image_cache, read_parquet
from cvgl.labels import PRIOR_METRICS, pixel_similarity, score_blocks
from cvgl.pipeline import load_projections
from cvgl.prior import pixel_descriptors
from cvgl.train import model_from_checkpoint

TOP = (60, 120, 240)


def mutual_margins(sim: np.ndarray, true_col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ground: is its top-1 mutual, its top-1/top-2 margin, is its top-1 its true tile."""
    top1 = sim.argmax(1)
    ordered = np.sort(sim, axis=1)
    return sim.argmax(0)[top1] == np.arange(len(sim)), ordered[:, -1] - ordered[:, -2], top1 == true_col


def precision_report(name: str, sim: np.ndarray, true_col: np.ndarray, t0: float | None) -> str:
    """One line: train R@1, mutual pairs, precision of the top-k mutual pairs by margin, kept at t0."""
    mutual, margin, correct = mutual_margins(sim, true_col)
    by_margin = np.argsort(-np.where(mutual, margin, -np.inf), kind="stable")
    parts = [f"{name:30s} R@1 {100 * correct.mean():5.1f}",
             f"mutual {mutual.sum():5d} ({100 * correct[mutual].mean():4.1f}%)"]
    parts += [f"top{k} {100 * correct[by_margin[:k]].mean():5.1f}%" for k in TOP]
    if t0 is not None:
        kept = mutual & (margin >= t0)
        parts.append(f"| kept at {t0}: {kept.sum():4d}, {100 * correct[kept].mean() if kept.any() else 0:5.1f}%")
    return "  ".join(parts)


def prior_descriptors(run: Path, ground_ids: np.ndarray, tiles: np.ndarray, radius: float | None,
                      size: int) -> tuple[np.ndarray, np.ndarray]:
    """The projection prior's pixel descriptors of each raw projection and every tile (cvgl.prior)."""
    index = read_parquet(run / "projected/index.parquet", ["ground_id", "path"]).set_index("ground_id")
    proj = load_images([run / "projected" / p for p in index.loc[ground_ids, "path"]], (size, size), 2)
    return pixel_descriptors(proj, size, radius), pixel_descriptors(tiles, size, radius)


def scores(g: np.ndarray, s: np.ndarray, pg: np.ndarray, ps: np.ndarray, w: float, csls_k: int,
           metric: str = "l1") -> np.ndarray:
    """The dense score matrix the pseudo_label rule matches on, for `labels.prior_weight` w, `labels.csls_k`
    and `labels.prior_metric`."""
    return np.concatenate([b.numpy() for _, b in score_blocks(g, s, 4096, (pg, ps), w, csls_k, metric=metric)])


def threshold_grid(name: str, sim: np.ndarray, true_col: np.ndarray, thresholds: tuple[float, ...]) -> str:
    """Kept mutual pairs and their precision at each round-1 margin threshold."""
    mutual, margin, correct = mutual_margins(sim, true_col)
    cells = []
    for t in thresholds:
        kept = mutual & (margin >= t)
        cells.append(f"{t:g}: {kept.sum():4d} {100 * correct[kept].mean() if kept.any() else 0:5.1f}%")
    return f"{name:30s} " + "  ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="results/<run> of a finished cold start")
    ap.add_argument("--model", type=Path, default=None, help="default: <run>/round-0/model.pt")
    ap.add_argument("--symmetries", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--t0", type=float, default=0.05, help="round 1's margin threshold")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prior-weights", type=float, nargs="+", default=[1.0, 2.0], help="labels.prior_weight values")
    ap.add_argument("--prior-size", type=int, default=64, help="labels.prior_size")
    ap.add_argument("--prior-metrics", nargs="+", default=["l1"], choices=list(PRIOR_METRICS),
                    help="labels.prior_metric values")
    ap.add_argument("--csls", type=int, nargs="+", default=[0, 10], help="labels.csls_k values (0 = off)")
    ap.add_argument("--grid", type=float, nargs="+", default=[0.035, 0.04, 0.045, 0.05, 0.06],
                    help="round-1 thresholds of the kept/precision grid")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    started = time.time()
    model_path = a.model or a.run / "round-0/model.pt"
    model, ckpt = model_from_checkpoint(model_path, torch.device("cpu"))
    cfg = ckpt["config"]
    g_ids, ground = read_image_cache(a.run / "cache/train-ground.npy", mmap=False)
    s_ids, tiles = read_image_cache(a.run / "cache/train-satellite.npy", mmap=False)
    fake = load_projections(a.run / "translated", g_ids, tuple(cfg["model"]["satellite_size"]), a.threads)
    truth = read_truth(a.run / "manifest")
    pos = truth[truth.kind == "positive"].drop_duplicates("ground_id").set_index("ground_id").satellite_id
    s_row = {s: i for i, s in enumerate(s_ids)}
    true_col = np.array([s_row[pos[g]] for g in g_ids])
    pg, ps = prior_descriptors(a.run, g_ids, tiles, cfg["model"].get("satellite_mask_radius"), a.prior_size)
    print(f"{len(g_ids)} train panoramas vs {len(s_ids)} train tiles, model {model_path}")
    for metric in a.prior_metrics:
        pixel = pixel_similarity(torch.from_numpy(pg), torch.from_numpy(ps), metric).numpy()
        print(precision_report(f"pixel {metric} (no learning)", pixel, true_col, None))
    cpu = torch.device("cpu")
    for k in a.symmetries:
        t = time.time()
        g = embed_images(model, ground, "ground", 128, cpu, "embed ground", symmetries=k)
        s = embed_images(model, tiles, "satellite", 128, cpu, "embed satellite", symmetries=k)
        seconds = time.time() - t
        f = embed_images(model, fake, "satellite", 128, cpu, "embed translated", symmetries=k)
        cross, bridge = g @ s.T, f @ s.T
        print(f"-- symmetries {k}: train embeddings in {seconds:.0f} s")
        print(precision_report(f"(cross + fake)/2, k={k}", (cross + bridge) / 2, true_col, a.t0))
        grid = []
        rows = [(0.0, c, "l1") for c in a.csls] + [(w, c, m) for w in a.prior_weights for c in a.csls
                                                   for m in a.prior_metrics]
        for w, c, metric in rows:
            name = ("cross" if w == 0 else f"prior {w:g}") + (f" {metric}" if w and len(a.prior_metrics) > 1
                                                              else "") + (f" csls {c}" if c else "") + f", k={k}"
            sim = cross if w == 0 and c == 0 else scores(g, s, pg, ps, w, c, metric)
            print(precision_report(name, sim, true_col, a.t0))
            grid.append(threshold_grid(name, sim, true_col, tuple(a.grid)))
        print("kept / precision by round-1 threshold:\n" + "\n".join(grid))
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
