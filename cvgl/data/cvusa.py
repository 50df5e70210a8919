"""CVUSA adapter (method.md §1.1): `splits/{train,val}-19zl.csv` -> the design's manifests.

Each CSV row is `sat_path, ground_path, annotation_path` (no header); the val split is the test split.
Only the split files and directory listings are read here (no pixels), so listing 35k pairs takes a fraction
of a second. Bad rows (wrong field count, missing or unreadable images, repeated images) raise with file and
line when `strict`, else they are dropped and returned in `Manifests.skipped` (see `cvgl.data.strict`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from cvgl.data.manifest import Manifests, opaque_id, pair_manifests
from cvgl.data.strict import BadData, FileChecker, PairEntry, require_splits, usable_pairs

SPLIT_FILES = {"train": "splits/train-19zl.csv", "test": "splits/val-19zl.csv"}
SALT = "cvusa"


def read_cvusa_rows(csv_path: Path, bad: BadData) -> list[tuple[int, str, str]]:
    """Return (line, satellite, ground) of one split file; malformed lines go to `bad` (raise or skip)."""
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: CVUSA split file does not exist")
    rows = []
    with open(csv_path, newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not f.strip() for f in row):
                continue
            if len(row) != 3:
                bad(csv_path, line_no, f"expected 3 comma-separated fields (sat, ground, annotation), "
                                       f"found {len(row)}")
                continue
            sat, grd = row[0].strip(), row[1].strip()
            if not sat or not grd:
                bad(csv_path, line_no, "empty satellite or ground path")
                continue
            rows.append((line_no, sat, grd))
    if not rows:
        bad(csv_path, 0, "split file is empty")
    return rows


def read_cvusa_split(csv_path: Path) -> list[tuple[str, str]]:
    """Return the (satellite, ground) relative paths of one split file, with errors naming file and line."""
    return [(s, g) for _, s, g in read_cvusa_rows(csv_path, BadData(csv_path.parent, strict=True))]


def build_cvusa_manifests(root: str | Path, gt_ratio: float, seed: int, check_files: bool = True,
                          strict: bool = True, verify_images: bool = False) -> Manifests:
    """List CVUSA's train and test pairs as opaque-id manifests (images, truth, labeled subset, skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root}: directory does not exist")
    bad = BadData(root, strict)
    entries = [PairEntry(split, csv_path, line, grd, sat)
               for split, csv_path in ((split, root / rel) for split, rel in SPLIT_FILES.items())
               for line, sat, grd in read_cvusa_rows(csv_path, bad)]
    entries = usable_pairs(entries, bad, FileChecker(root, verify_images) if check_files else None)
    require_splits(entries, list(SPLIT_FILES), f"{root} (CVUSA)")
    return pair_manifests(entries, lambda view, e: opaque_id(view, getattr(e, view), SALT), gt_ratio, seed,
                          bad.frame())
