"""Small datasets in published layouts, built on the fly (real file names and split formats, tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_cvusa_fixture(root: Path, n_train: int = 8, n_test: int = 4, pano_hw: tuple[int, int] = (32, 176),
                        tile: int = 32, seed: int = 0) -> list[tuple[str, str, str]]:
    """A CVUSA-layout root with random images; returns the (split, sat_rel, ground_rel) rows written."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, fname, ids in (("train", "train-19zl.csv", range(1, n_train + 1)),
                              ("test", "val-19zl.csv", range(n_train + 1, n_train + n_test + 1))):
        lines = []
        for i in ids:
            sat, grd = f"bingmap/19/{i:07d}.jpg", f"streetview/panos/{i:07d}.jpg"
            for rel, hw in ((sat, (tile, tile)), (grd, pano_hw)):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(root / rel, quality=95)
            lines.append(f"{sat},{grd},streetview/annotations/{i:07d}.png")
            rows.append((split, sat, grd))
        (root / "splits" / fname).write_text("\n".join(lines) + "\n")
    return rows
