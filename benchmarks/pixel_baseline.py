"""No-learning baselines on a CVUSA-layout test split: how far does geometry alone get?

Every test panorama is projected to a bird's-eye view (``cvgl.geometry.project_to_bev``, CVUSA band
completion), resized to the tile size, and all test tiles are ranked by

(a) pixel similarity: negative mean absolute difference on the BEV's valid mask after per-image, per-channel
    standardisation (removes any global gain/offset between the two sensors), at full resolution and after
    4x4 average pooling (tolerates small misalignments);
(b) colour-histogram similarity: intersection of joint RGB histograms (8 bins per channel) on the valid mask.

Prints R@1/R@5/R@10/R@1% of each. The synthetic world is meant to keep both below 20 % R@1 (a task that needs
learning), while its content still identifies a location.

    python benchmarks/pixel_baseline.py --root data/synth            # an existing dataset
    python benchmarks/pixel_baseline.py --generate [--seed 0]        # write the default world to a temp dir
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cvgl.geometry import bev_valid_mask, project_to_bev
from cvgl.models import centre_disc

RECALL_AT = (1, 5, 10)


def read_split(root: Path, csv_name: str = "val-19zl.csv") -> list[tuple[Path, Path]]:
    """(satellite path, panorama path) of every row of a CVUSA split file."""
    with (root / "splits" / csv_name).open() as fh:
        return [(root / row[0].strip(), root / row[1].strip()) for row in csv.reader(fh) if row]


def load_images(paths: list[Path]) -> torch.Tensor:
    """(N, 3, H, W) float32 in [0, 255]."""
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def bev_views(panos: torch.Tensor, tile_size: int, bev_size: int,
              fov_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """BEVs resized to the tile size and the matching valid mask (1, 1, S, S)."""
    bev = project_to_bev(panos, bev_size, fov_deg, band=True)
    valid = bev_valid_mask(tuple(panos.shape[2:]), bev_size, fov_deg, True)
    mask = torch.from_numpy(valid)[None, None].float()
    if bev_size != tile_size:
        bev = F.interpolate(bev, size=(tile_size, tile_size), mode="bilinear", antialias=True,
                            align_corners=False)
        mask = F.interpolate(mask, size=(tile_size, tile_size), mode="nearest")
    return bev, mask


def standardise(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel zero mean / unit std over the masked pixels; flattened masked features."""
    keep = mask[0, 0].bool()
    x = images[:, :, keep]  # (N, 3, P)
    x = (x - x.mean(dim=2, keepdim=True)) / (x.std(dim=2, keepdim=True) + 1e-6)
    return x.reshape(x.shape[0], -1)


def pixel_scores(bev: torch.Tensor, tiles: torch.Tensor, mask: torch.Tensor, pool: int) -> torch.Tensor:
    """(Q, G) negative mean absolute difference of standardised images (optionally average-pooled)."""
    if pool > 1:
        weight = F.avg_pool2d(mask, pool)
        bev = F.avg_pool2d(bev * mask, pool) / weight.clamp_min(1e-6)
        tiles = F.avg_pool2d(tiles * mask, pool) / weight.clamp_min(1e-6)
        mask = (weight > 0.5).float()
    q, g = standardise(bev, mask), standardise(tiles, mask)
    return -torch.cdist(q, g, p=1) / q.shape[1]


def histograms(images: torch.Tensor, mask: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """(N, bins^3) normalised joint RGB histograms over the masked pixels."""
    keep = mask[0, 0].bool()
    x = (images[:, :, keep].clamp(0, 255) * bins / 256).long().clamp(max=bins - 1)  # (N, 3, P)
    codes = x[:, 0] * bins * bins + x[:, 1] * bins + x[:, 2]
    hist = torch.zeros(images.shape[0], bins**3)
    hist.scatter_add_(1, codes, torch.ones_like(codes, dtype=torch.float32))
    return hist / hist.sum(dim=1, keepdim=True)


def histogram_scores(bev: torch.Tensor, tiles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(Q, G) histogram intersection."""
    hq, hg = histograms(bev, mask), histograms(tiles, mask)
    return torch.stack([torch.minimum(h[None], hg).sum(dim=1) for h in hq])


def recalls(scores: torch.Tensor) -> dict[str, float]:
    """Recall@K (%) where query i's true match is gallery item i."""
    true = scores.diagonal()[:, None]
    rank = (scores > true).sum(dim=1)  # 0 = the true tile is ranked first
    out = {f"R@{k}": float((rank < k).float().mean() * 100) for k in RECALL_AT}
    one_percent = max(1, round(scores.shape[1] / 100))
    out["R@1%"] = float((rank < one_percent).float().mean() * 100)
    return out


def evaluate(root: Path, fov_deg: float, bev_size: int | None) -> dict[str, dict[str, float]]:
    """All baselines on the test split of the CVUSA-layout dataset at ``root``."""
    pairs = read_split(root)
    tiles = load_images([s for s, _ in pairs])
    panos = load_images([p for _, p in pairs])
    size = tiles.shape[-1]
    bev, mask = bev_views(panos, size, bev_size or size, fov_deg)
    # The centre disc the model's satellite encoder sees (model.satellite_mask_radius: 0.5): near the camera the
    # projection is most faithful, so this is the strongest pixel baseline, not the literal one.
    disc = mask * centre_disc((size, size), 0.5)[None, None]
    return {
        "pixel (full res)": recalls(pixel_scores(bev, tiles, mask, pool=1)),
        "pixel (centre disc)": recalls(pixel_scores(bev, tiles, disc, pool=1)),
        "pixel (4x4 pooled)": recalls(pixel_scores(bev, tiles, mask, pool=4)),
        "colour histogram": recalls(histogram_scores(bev, tiles, mask)),
        "chance": {f"R@{k}": 100 * k / len(pairs) for k in RECALL_AT} | {"R@1%": 1.0},
        "queries": {"n": float(len(pairs))},
    }


def generate(seed: int) -> tuple[Path, float]:
    """Write the default synthetic world to a temporary directory; returns (root, seconds)."""
    from cvgl.synth import SynthConfig, write_synthetic_cvusa

    root = Path(tempfile.mkdtemp(prefix="cvgl-synth-")) / "synth"
    start = time.perf_counter()
    write_synthetic_cvusa(SynthConfig(), root, seed=seed, progress=True)
    return root, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help="CVUSA-layout dataset root")
    source.add_argument("--generate", action="store_true", help="generate the default synthetic world first")
    parser.add_argument("--seed", type=int, default=0, help="seed for --generate")
    parser.add_argument("--keep", action="store_true", help="keep the generated world (prints its path)")
    parser.add_argument("--fov", type=float, default=175.0, help="BEV field of view, degrees (CVUSA: 175)")
    parser.add_argument("--bev-size", type=int, default=None,
                        help="BEV size before resizing (default: tile size)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    root, seconds = (args.root, None) if args.root else generate(args.seed)
    try:
        results = evaluate(root, args.fov, args.bev_size)
    finally:
        if args.generate and not args.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    if seconds is not None:
        results["generation"] = {"seconds": seconds}
        print(f"generated the default world in {seconds:.1f} s" + (f" at {root}" if args.keep else ""))
    print(f"{'baseline':<22}" + "".join(f"{k:>8}" for k in ("R@1", "R@5", "R@10", "R@1%")))
    for name, r in results.items():
        if "R@1" in r:
            print(f"{name:<22}" + "".join(f"{r[k]:8.2f}" for k in ("R@1", "R@5", "R@10", "R@1%")))
    print(f"queries = gallery = {int(results['queries']['n'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
