"""Does translation bring a panorama's projection closer to its true satellite tile? (issue 4 diagnostics)

For every train panorama of a finished run, compares its true tile (truth: diagnostics only) with
(a) the raw projection (`projected/`) and (b) the translated projection (`translated/`), and, as the scale of
"unrelated", with a random other tile. Distances, over the pixels the projection can see, at the translator's
output size:

* pixel L1: mean absolute RGB difference (0-255);
* histogram: 1 - intersection of joint 8x8x8 RGB histograms (no learning);
* feature: 1 - cosine of the intra-view model's satellite embeddings (`coldstart/intra.pt`, trained on real
  tiles only, never on projections, so it favours neither (a) nor (b)).

    python benchmarks/translation_fidelity.py results/synth-unsupervised [--limit 600]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cvgl.augment import resize_images
from cvgl.data.manifest import read_truth
from cvgl.embed import embed_images
from cvgl.io import load_image, load_images, read_image_cache, read_parquet
from cvgl.models import centre_disc
from cvgl.train import build_model, load_checkpoint


def histograms(x: np.ndarray, valid: np.ndarray, bins: int = 8) -> np.ndarray:
    codes = (x[:, valid].astype(np.int64) * bins // 256)  # (N, P, 3)
    flat = codes[..., 0] * bins * bins + codes[..., 1] * bins + codes[..., 2]
    h = np.stack([np.bincount(row, minlength=bins ** 3) for row in flat]).astype(np.float64)
    return h / h.sum(axis=1, keepdims=True)


def distances(tiles: np.ndarray, other: np.ndarray, valid: np.ndarray, emb_t: np.ndarray | None,
              emb_o: np.ndarray | None) -> dict[str, float]:
    out = {"pixel L1": float(np.abs(tiles[:, valid].astype(np.float32) - other[:, valid]).mean())}
    ht, ho = histograms(tiles, valid), histograms(other, valid)
    out["histogram"] = float((1 - np.minimum(ht, ho).sum(axis=1)).mean())
    if emb_t is not None and emb_o is not None:
        out["feature"] = float((1 - (emb_t * emb_o).sum(axis=1)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="results/<run> of a finished workflow")
    ap.add_argument("--limit", type=int, default=0, help="use the first N panoramas (0 = all)")
    ap.add_argument("--radius", type=float, default=None,
                    help="compare only on the centre disc of this radius (fraction of half the side), e.g. the "
                         "model's satellite_mask_radius; default: everything the projection sees")
    a = ap.parse_args()
    t0 = time.time()
    run = a.run
    index = read_parquet(run / "translated/index.parquet").set_index("ground_id")
    proj_index = read_parquet(run / "projected/index.parquet").set_index("ground_id")
    gids = np.sort(index.index.to_numpy(dtype=object))
    if a.limit:
        gids = gids[:a.limit]
    truth = read_truth(run / "manifest")
    pos = truth[truth.kind == "positive"].drop_duplicates("ground_id").set_index("ground_id").satellite_id
    sat_ids, sat = read_image_cache(run / "cache/train-satellite.npy", mmap=False)
    row = {s: i for i, s in enumerate(sat_ids)}
    true_rows = np.array([row[pos[g]] for g in gids])
    other_rows = (true_rows + np.random.default_rng(0).integers(1, len(sat_ids), len(gids))) % len(sat_ids)
    paths = [run / "translated" / p for p in index.loc[gids, "path"]]
    size = load_image(paths[0]).shape[:2]
    translated = load_images(paths, size, 2)
    raw = load_images([run / "projected" / p for p in proj_index.loc[gids, "path"]], size, 2)
    tiles = resize_images(sat, size)
    valid = np.load(run / "projected/valid-mask.npy").astype(np.float32)
    valid = F.interpolate(torch.from_numpy(valid)[None, None], size=size, mode="nearest")[0, 0].numpy() > 0.5
    if a.radius:
        valid &= centre_disc(size, a.radius).numpy() > 0

    emb = {}
    intra = run / "coldstart/intra.pt"
    if intra.exists():
        cfg = load_checkpoint(intra)["config"]
        model, _ = build_model(cfg, intra, torch.device("cpu"))
        model.eval()
        msize = tuple(cfg["model"]["satellite_size"])
        for name, images in (("tile", tiles), ("raw", raw), ("translated", translated)):
            masked = images * valid[None, :, :, None]  # both sides see only what the projection sees
            emb[name] = embed_images(model, resize_images(masked.astype(np.uint8), msize), "satellite", 256, "cpu")
    true_tiles, other_tiles = tiles[true_rows], tiles[other_rows]
    e_true = emb["tile"][true_rows] if emb else None
    e_other = emb["tile"][other_rows] if emb else None
    rows = {
        "(a) raw projection vs true tile": distances(true_tiles, raw, valid, e_true, emb.get("raw")),
        "(b) translated vs true tile": distances(true_tiles, translated, valid, e_true, emb.get("translated")),
        "    translated vs a random other tile": distances(other_tiles, translated, valid, e_other,
                                                           emb.get("translated")),
    }
    cols = list(next(iter(rows.values())))
    region = f"centre disc of radius {a.radius}" if a.radius else "all the projection sees"
    print(f"{len(gids)} train panoramas of {run}, {size[0]}x{size[1]} px, {region}, lower is closer")
    print(f"{'':40s}" + "".join(f"{c:>12s}" for c in cols))
    for name, d in rows.items():
        print(f"{name:40s}" + "".join(f"{d[c]:12.4f}" for c in cols))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
