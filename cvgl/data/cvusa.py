"""CVUSA adapter (docs/method.md §1.1): `splits/{train,val}-19zl.csv` -> the design's manifests.

Each CSV row is `sat_path, ground_path, annotation_path` (no header); the val split is the test split.
Only the split files and directory listings are read here (no pixels), so listing 35k pairs takes a fraction
of a second. Bad rows (wrong field count, missing or unreadable images, repeated images) raise with file and
line when `strict`, else they are dropped and returned in `Manifests.skipped` (see `cvgl.data.strict`).

Coordinates: the split files carry none. When the copy has the release's GPS table `split_locations/all.csv`
(no header; row k is image id k, the integer in the satellite file name; fields satellite lat, satellite lon,
ground lat, ground lon, any further fields ignored), each image gets its lat/lon from it; without that file
lat/lon are NaN. With the table present, a listed pair whose id has no row, or whose row does not parse, is a
bad entry like any other (a truncated table should not pass silently as "no coordinates").
"""

from __future__ import annotations

import csv
import math
from pathlib import Path, PurePosixPath

from cvgl.data.manifest import Manifests, opaque_id, pair_manifests
from cvgl.data.strict import BadData, FileChecker, PairEntry, require_splits, usable_pairs

SPLIT_FILES = {"train": "splits/train-19zl.csv", "test": "splits/val-19zl.csv"}
SALT = "cvusa"
GPS_FILE = "split_locations/all.csv"


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


def read_gps_table(path: Path) -> list[list[str]] | None:
    """The raw rows of the GPS table (row k - 1 = id k), or None if the copy has no such file."""
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def parse_gps_row(row: list[str]) -> tuple[float, float, float, float]:
    """(satellite lat, satellite lon, ground lat, ground lon) of one GPS table row; ValueError saying why not."""
    if len(row) < 4:
        raise ValueError(f"expected at least 4 comma-separated fields (satellite lat, lon, ground lat, lon), "
                         f"found {len(row)}")
    try:
        s_lat, s_lon, g_lat, g_lon = (float(f) for f in row[:4])
    except ValueError:
        raise ValueError(f"coordinates {row[:4]} are not numbers") from None
    values = (s_lat, s_lon, g_lat, g_lon)
    if not all(math.isfinite(v) for v in values) or max(abs(s_lat), abs(g_lat)) > 90 or \
            max(abs(s_lon), abs(g_lon)) > 180:
        raise ValueError(f"coordinates {row[:4]} are not latitudes in [-90, 90] and longitudes in [-180, 180]")
    return values


def locate_pairs(entries: list[PairEntry], table: list[list[str]], gps_path: Path,
                 bad: BadData) -> dict[PairEntry, tuple[float, float, float, float]]:
    """Coordinates (ground lat, lon, satellite lat, lon) of each pair from the GPS table; pairs it cannot
    place go to `bad` and are absent from the result."""
    out = {}
    for e in entries:
        stem = PurePosixPath(e.satellite).stem
        if not stem.isdigit():
            bad(e.file, e.line, f"satellite {e.satellite} has no integer id to look up in {GPS_FILE}")
            continue
        k = int(stem)
        if not 1 <= k <= len(table):
            bad(e.file, e.line, f"id {k} of {e.satellite} has no row in {GPS_FILE} ({len(table)} rows)")
            continue
        try:
            s_lat, s_lon, g_lat, g_lon = parse_gps_row(table[k - 1])
        except ValueError as err:
            bad(gps_path, k, f"{err} (the coordinates of {e.satellite}, listed at {e.file.name}:{e.line})")
            continue
        out[e] = (g_lat, g_lon, s_lat, s_lon)
    return out


def build_cvusa_manifests(root: str | Path, gt_ratio: float, seed: int, check_files: bool = True,
                          strict: bool = True, verify_images: bool = False) -> Manifests:
    """List CVUSA's train and test pairs as opaque-id manifests (images, truth, labeled subset, skipped), with
    lat/lon from `split_locations/all.csv` when the copy has it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root}: directory does not exist")
    bad = BadData(root, strict)
    entries = [PairEntry(split, csv_path, line, grd, sat)
               for split, csv_path in ((split, root / rel) for split, rel in SPLIT_FILES.items())
               for line, sat, grd in read_cvusa_rows(csv_path, bad)]
    entries = usable_pairs(entries, bad, FileChecker(root, verify_images) if check_files else None)
    table = read_gps_table(root / GPS_FILE)
    coords = None
    if table is not None:
        coords = locate_pairs(entries, table, root / GPS_FILE, bad)
        entries = [e for e in entries if e in coords]
    require_splits(entries, list(SPLIT_FILES), f"{root} (CVUSA)")
    return pair_manifests(entries, lambda view, e: opaque_id(view, getattr(e, view), SALT), gt_ratio, seed,
                          bad.frame(), None if coords is None else coords.__getitem__)
