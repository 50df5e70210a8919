"""CVUSA adapter (method.md §1.1): `splits/{train,val}-19zl.csv` -> the design's manifests.

Each CSV row is `sat_path, ground_path, annotation_path` (no header); the val split is the test split.
Only the split files are read here (no pixels), so listing 35k pairs takes a fraction of a second.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from cvgl.data.manifest import Manifests, opaque_id, select_labeled

SPLIT_FILES = {"train": "splits/train-19zl.csv", "test": "splits/val-19zl.csv"}


def read_cvusa_split(csv_path: Path) -> list[tuple[str, str]]:
    """Return the (satellite, ground) relative paths of one split file, with errors naming file and line."""
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: CVUSA split file does not exist")
    pairs = []
    with open(csv_path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not f.strip() for f in row):
                continue
            if len(row) != 3:
                raise ValueError(f"{csv_path}:{line_no}: expected 3 comma-separated fields "
                                 f"(sat, ground, annotation), found {len(row)}")
            pairs.append((row[0].strip(), row[1].strip()))
    if not pairs:
        raise ValueError(f"{csv_path}: split file is empty")
    return pairs


def build_cvusa_manifests(root: str | Path, gt_ratio: float, seed: int,
                          check_files: bool = True) -> Manifests:
    """List CVUSA's train and test pairs as opaque-id manifests (images, truth, labeled subset)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root}: directory does not exist")
    images, truth = [], []
    for split, rel in SPLIT_FILES.items():
        for sat_rel, grd_rel in read_cvusa_split(root / rel):
            for view, p in (("satellite", sat_rel), ("ground", grd_rel)):
                if check_files and not (root / p).exists():
                    raise FileNotFoundError(f"{root / rel}: listed {view} image {root / p} does not exist")
            g, s = opaque_id("ground", grd_rel, "cvusa"), opaque_id("satellite", sat_rel, "cvusa")
            images += [(g, "ground", split, grd_rel), (s, "satellite", split, sat_rel)]
            truth.append((g, s, "positive"))
    img = pd.DataFrame(images, columns=["image_id", "view", "split", "path"])
    tr = pd.DataFrame(truth, columns=["ground_id", "satellite_id", "kind"])
    return Manifests(img, tr, select_labeled(tr, img, gt_ratio, seed))
