"""VIGOR adapter (docs/method.md §1.3): `splits/<City>/*.txt` + `<City>/{satellite,panorama}/` -> manifests.

Panorama split lines have 13 whitespace-separated columns
`pano sat_pos dx dy semi1 dx dy semi2 dx dy semi3 dx dy`; `satellite_list.txt` has one tile name per line.
Same-area: train/test = `same_area_balanced_{train,test}.txt` of every selected city. Cross-area: train =
NewYork+Seattle, test = Chicago+SanFrancisco (`pano_label_balanced.txt`), each intersected with `cities`.

Satellite tiles (choice where docs/method.md is silent on manifests): a split's satellite rows are ALL tiles of
`satellite_list.txt` of that split's cities, because VIGOR evaluates against every tile of the selected
cities (not only those that are someone's positive), and the train-side scan ranks all train-city tiles too.
A tile is listed once per split it belongs to (in same-area every tile is in both the train and the test
split), each listing with its own split-scoped opaque id, so train and test never share an id.
Truth: one `positive` row (sat_pos) and up to three `semi_positive` rows per panorama, with the tile-pixel
offsets as float columns `dx`, `dy`. images.parquet has an extra `city` column; the labeled subset is drawn
per city, floor(gt_ratio * N_city) positives each (UCVGL keeps its GT share per city).

Coordinates: every image's `lat`/`lon` come from its file name, `satellite_<lat>_<lon>.png` (the tile centre)
and `<id>,<lat>,<lon>,.jpg` (the panorama), in WGS84 degrees. A tile's centre is offset from the panorama by
the label's (dx, dy) pixels: up to a quarter of the tile side per axis for the positive, half for a semi-positive.

Bad entries (wrong field count, unparsable offset, a tile or panorama name without parsable coordinates,
repeated tile/panorama, a tile not in satellite_list.txt, missing/unreadable image) raise with file and line
when `strict`; otherwise the panorama (or tile) is dropped and reported in `Manifests.skipped`. A panorama is
dropped if any of its four tiles is unusable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cvgl.data.manifest import Manifests, scoped_id, select_labeled
from cvgl.data.strict import BadData, FileChecker, require_splits

SALT = "vigor"
CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
SATELLITE_LIST = "satellite_list.txt"
SAME_AREA_FILES = {"train": "same_area_balanced_train.txt", "test": "same_area_balanced_test.txt"}
CROSS_AREA_FILE = "pano_label_balanced.txt"
CROSS_AREA_CITIES = {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")}
PROTOCOLS = ("same_area", "cross_area")
N_FIELDS = 13
TILE_COLUMNS = (1, 4, 7, 10)  # sat_pos, semi1, semi2, semi3; each followed by its dx, dy
TILE_NAME = re.compile(r"satellite_([^_]+)_([^_]+)\.[A-Za-z0-9]+")
PANO_NAME = re.compile(r"[^,]+,([^,]+),([^,]+),\.[A-Za-z0-9]+")
TILE_PATTERN, PANO_PATTERN = "satellite_<lat>_<lon>.png", "<id>,<lat>,<lon>,.jpg"


@dataclass(frozen=True)
class PanoRow:
    """One parsed panorama line: the panorama, its lat/lon, and (tile, dx, dy) for the positive then the
    semi-positives."""

    file: Path
    line: int
    pano: str
    tiles: tuple[tuple[str, float, float], ...]
    lat: float = math.nan
    lon: float = math.nan


def name_latlon(name: str, pattern: re.Pattern[str], expected: str) -> tuple[float, float]:
    """(lat, lon) in degrees written in a VIGOR file name; ValueError saying why if the name has none."""
    match = pattern.fullmatch(name)
    if match is None:
        raise ValueError(f"name {name} is not {expected}")
    try:
        lat, lon = float(match.group(1)), float(match.group(2))
    except ValueError:
        raise ValueError(f"name {name}: coordinates {match.group(1)!r}, {match.group(2)!r} are not numbers "
                         f"({expected})") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise ValueError(f"name {name}: ({lat}, {lon}) is not a latitude in [-90, 90] and a longitude in "
                         f"[-180, 180]")
    return lat, lon


def tile_latlon(name: str) -> tuple[float, float]:
    """The tile centre's (lat, lon) from `satellite_<lat>_<lon>.png`."""
    return name_latlon(name, TILE_NAME, TILE_PATTERN)


def pano_latlon(name: str) -> tuple[float, float]:
    """The panorama's (lat, lon) from `<id>,<lat>,<lon>,.jpg`."""
    return name_latlon(name, PANO_NAME, PANO_PATTERN)


def split_cities(cities: Sequence[str], protocol: str) -> dict[str, list[str]]:
    """Which selected cities feed the train and the test split under a protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"VIGOR protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if isinstance(cities, str):
        cities = (cities,)
    unknown = [c for c in cities if c not in CITIES]
    if unknown or not cities:
        raise ValueError(f"VIGOR cities must be a non-empty subset of {CITIES}, got {list(cities)}")
    chosen = [c for c in CITIES if c in set(cities)]
    if protocol == "same_area":
        return {"train": chosen, "test": chosen}
    out = {split: [c for c in chosen if c in group] for split, group in CROSS_AREA_CITIES.items()}
    for split, group in out.items():
        if not group:
            raise ValueError(f"VIGOR cross_area: none of the selected cities {chosen} is a {split} city "
                             f"({list(CROSS_AREA_CITIES[split])})")
    return out


def _field_lines(path: Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, whitespace-separated fields) of every non-blank line; a missing file is an error."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: VIGOR {what} does not exist")
    with open(path) as fh:
        for line_no, text in enumerate(fh, start=1):
            fields = text.split()
            if fields:
                yield line_no, fields


def read_satellite_list(path: Path, bad: BadData) -> dict[str, int]:
    """Tile name -> 1-based line of `satellite_list.txt`; malformed or repeated lines, and names without
    coordinates, go to `bad`."""
    tiles: dict[str, int] = {}
    for line_no, fields in _field_lines(path, "satellite list"):
        if len(fields) != 1:
            bad(path, line_no, f"expected 1 field (satellite file name), found {len(fields)}")
            continue
        if fields[0] in tiles:
            bad(path, line_no, f"tile {fields[0]} already listed at line {tiles[fields[0]]}")
            continue
        try:
            tile_latlon(fields[0])
        except ValueError as err:
            bad(path, line_no, f"tile {err}")
            continue
        tiles[fields[0]] = line_no
    if not tiles:
        bad(path, 0, "satellite list is empty")
    return tiles


def read_pano_split(path: Path, bad: BadData) -> list[PanoRow]:
    """Parse a 13-column panorama split file; malformed or repeated lines go to `bad`."""
    rows: list[PanoRow] = []
    seen: dict[str, int] = {}
    for line_no, f in _field_lines(path, "split file"):
        if len(f) != N_FIELDS:
            bad(path, line_no, f"expected {N_FIELDS} whitespace-separated fields (pano sat_pos dx dy "
                               f"semi1 dx dy semi2 dx dy semi3 dx dy), found {len(f)}")
            continue
        try:
            tiles = tuple((f[c], float(f[c + 1]), float(f[c + 2])) for c in TILE_COLUMNS)
        except ValueError as err:
            bad(path, line_no, f"offset is not a number ({err})")
            continue
        try:
            lat, lon = pano_latlon(f[0])
        except ValueError as err:
            bad(path, line_no, f"panorama {err}")
            continue
        if f[0] in seen:
            bad(path, line_no, f"panorama {f[0]} already listed at line {seen[f[0]]}")
            continue
        seen[f[0]] = line_no
        rows.append(PanoRow(path, line_no, f[0], tiles, lat, lon))
    if not rows:
        bad(path, 0, "split file is empty")
    return rows


def build_vigor_manifests(root: str | Path, gt_ratio: float, seed: int, cities: Sequence[str] = CITIES,
                          protocol: str = "same_area", strict: bool = True, check_files: bool = True,
                          verify_images: bool = False) -> Manifests:
    """List VIGOR's panoramas, every tile of the split cities, and positive/semi-positive truth as manifests."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.root {root}: directory does not exist")
    per_split = split_cities(cities, protocol)
    bad = BadData(root, strict)
    checker = FileChecker(root, verify_images) if check_files else None

    tiles: dict[str, dict[str, int]] = {}  # city -> usable tile name -> line
    for city in sorted({c for group in per_split.values() for c in group}):
        sat_list = root / "splits" / city / SATELLITE_LIST
        listed = read_satellite_list(sat_list, bad)
        if checker is not None:
            problems = checker.problems([f"{city}/satellite/{t}" for t in listed])
            for t, line in list(listed.items()):
                err = problems.get(f"{city}/satellite/{t}")
                if err is not None:
                    bad(sat_list, line, f"listed satellite {err[1]}", err[0])
                    del listed[t]
        tiles[city] = listed

    panos: dict[str, list[tuple[str, PanoRow]]] = {}  # split -> (city, row)
    for split, group in per_split.items():
        for city in group:
            fname = SAME_AREA_FILES[split] if protocol == "same_area" else CROSS_AREA_FILE
            for row in read_pano_split(root / "splits" / city / fname, bad):
                missing = next((t for t, _, _ in row.tiles if t not in tiles[city]), None)
                if missing is not None:
                    bad(row.file, row.line, f"tile {missing} is not a usable tile of "
                                            f"splits/{city}/{SATELLITE_LIST}")
                    continue
                panos.setdefault(split, []).append((city, row))
    if checker is not None:
        problems = checker.problems([f"{city}/panorama/{r.pano}" for rows in panos.values() for city, r in rows])
        if problems:
            for split, rows in panos.items():
                kept = []
                for city, r in rows:
                    err = problems.get(f"{city}/panorama/{r.pano}")
                    if err is None:
                        kept.append((city, r))
                    else:
                        bad(r.file, r.line, f"listed panorama {err[1]}", err[0])
                panos[split] = kept
    require_splits([s for s, rows in panos.items() if rows], list(per_split), f"{root} (VIGOR {protocol})")

    images, truth = [], []
    for split, group in per_split.items():
        tile_id: dict[tuple[str, str], str] = {}
        for city in group:
            for t in tiles[city]:
                rel = f"{city}/satellite/{t}"
                tile_id[city, t] = scoped_id("satellite", split, rel, SALT)
                images.append((tile_id[city, t], "satellite", split, rel, city, *tile_latlon(t)))
        for city, r in panos[split]:
            rel = f"{city}/panorama/{r.pano}"
            g = scoped_id("ground", split, rel, SALT)
            images.append((g, "ground", split, rel, city, r.lat, r.lon))
            done = set()
            for k, (t, dx, dy) in enumerate(r.tiles):
                if t in done:  # a semi-positive repeating the positive (or another semi) adds nothing
                    continue
                done.add(t)
                truth.append((g, tile_id[city, t], "positive" if k == 0 else "semi_positive", dx, dy))
    img = pd.DataFrame(images, columns=["image_id", "view", "split", "path", "city", "lat", "lon"])
    img = img.astype({"lat": "float64", "lon": "float64"}).sort_values("image_id")
    tr = pd.DataFrame(truth, columns=["ground_id", "satellite_id", "kind", "dx", "dy"])
    tr = tr.astype({"dx": "float64", "dy": "float64"}).sort_values(["ground_id", "satellite_id"])
    img, tr = img.reset_index(drop=True), tr.reset_index(drop=True)
    return Manifests(img, tr, select_labeled(tr, img, gt_ratio, seed, by="city"), bad.frame())
