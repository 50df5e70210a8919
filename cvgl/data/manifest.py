"""The dataset-independent manifests every stage downstream reads (docs/architecture.md, "File schemas").

`images.parquet` lists every image with an opaque id and its `lat`/`lon` (NaN where the dataset has none);
`truth.parquet` pairs them (read only by evaluation, diagnostics and the labeled-subset choice);
`labeled.parquet` is the `gt_ratio` share of the train truth, the only truth training ever sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvgl.data.strict import SKIPPED_COLUMNS, empty_skipped
from cvgl.io import atomic_path, read_parquet, write_parquet

IMAGE_COLUMNS = ["image_id", "view", "split", "path"]
#: Written for every dataset, float64 degrees (WGS84), NaN where the dataset has no coordinates for an image.
COORD_COLUMNS = ["lat", "lon"]
TRUTH_COLUMNS = ["ground_id", "satellite_id", "kind"]
LABELED_COLUMNS = ["ground_id", "satellite_id"]


def opaque_id(view: str, rel_path: str, salt: str) -> str:
    """A stable id that hides the file name: a ground and its satellite share a stem on disk, not an id."""
    digest = hashlib.blake2b(f"{salt}\0{view}\0{rel_path}".encode(), digest_size=8).hexdigest()
    return f"{view[0]}{digest}"


def scoped_id(view: str, split: str, rel_path: str, salt: str) -> str:
    """An opaque id that also depends on the split: one file may be listed in two splits (a VIGOR tile is in
    the train and the test gallery), and each listing needs its own unique id."""
    return opaque_id(view, f"{split}\0{rel_path}", salt)


@dataclass
class Manifests:
    """The three manifests, plus the entries an adapter dropped with `strict=False` (file, line, reason)."""

    images: pd.DataFrame
    truth: pd.DataFrame
    labeled: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=empty_skipped)


def select_labeled(truth: pd.DataFrame, images: pd.DataFrame, gt_ratio: float, seed: int,
                   by: str | None = None) -> pd.DataFrame:
    """Choose floor(gt_ratio * N_train) train positives with the seed (semi-supervised mode).

    Candidates are taken in ground-id order before the seeded permutation, so the choice depends only on the
    ids and the seed, never on the order the dataset lists its files in. With `by` (an images column, e.g.
    VIGOR's `city`) the share is taken per group, floor(gt_ratio * N_group) each, as UCVGL does per city;
    each group's draw is seeded by (seed, group name), so it does not change when other groups are added.
    """
    if not 0.0 <= gt_ratio <= 1.0:
        raise ValueError(f"rounds.gt_ratio must be within [0, 1], got {gt_ratio}")
    train = images[(images.view == "ground") & (images.split == "train")]
    truth = truth[truth.kind == "positive"]
    if by is None:
        return _select(truth, train.image_id, gt_ratio, np.random.default_rng(seed))
    if by not in images.columns:
        raise ValueError(f"select_labeled: images have no column {by!r} to group by")
    parts = [_select(truth, ids, gt_ratio, np.random.default_rng([seed, _stable_int(str(group))]))
             for group, ids in sorted(train.groupby(by).image_id, key=lambda kv: str(kv[0]))]
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in LABELED_COLUMNS})
    return pd.concat(parts).sort_values("ground_id").reset_index(drop=True)


def _select(positives: pd.DataFrame, train_ground: pd.Series, gt_ratio: float,
            rng: np.random.Generator) -> pd.DataFrame:
    train_set = set(train_ground)  # a Python set lookup: pandas' isin on arrow strings is ~10x slower here
    ids = positives.ground_id.to_numpy(dtype=object)
    pos = positives[np.fromiter((g in train_set for g in ids), bool, len(ids))]
    pos = pos.sort_values("ground_id").reset_index(drop=True)
    n = int(np.floor(gt_ratio * len(pos) + 1e-9))
    order = rng.permutation(len(pos))[:n]
    return pos.iloc[np.sort(order)][LABELED_COLUMNS].reset_index(drop=True)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def pair_manifests(entries: Sequence[Any], make_id: Callable[[str, Any], str], gt_ratio: float, seed: int,
                   skipped: pd.DataFrame,
                   locate: Callable[[Any], tuple[float, float, float, float]] | None = None) -> Manifests:
    """Manifests of one-to-one datasets (CVUSA, CVACT): every entry (`split`, `ground`, `satellite` paths) is one
    ground image, one satellite image and their positive pair; `make_id(view, entry)` gives the opaque ids and
    `locate(entry)` the (ground lat, ground lon, satellite lat, satellite lon), NaN when not given."""
    images, truth = [], []
    nowhere = (np.nan,) * 4
    for e in entries:
        g, s = make_id("ground", e), make_id("satellite", e)
        g_lat, g_lon, s_lat, s_lon = nowhere if locate is None else locate(e)
        images += [(g, "ground", e.split, e.ground, g_lat, g_lon), (s, "satellite", e.split, e.satellite, s_lat, s_lon)]
        truth.append((g, s, "positive"))
    img = pd.DataFrame(images, columns=IMAGE_COLUMNS + COORD_COLUMNS)
    img = with_coordinates(img).sort_values("image_id", ignore_index=True)
    tr = pd.DataFrame(truth, columns=TRUTH_COLUMNS).sort_values(["ground_id", "satellite_id"], ignore_index=True)
    return Manifests(img, tr, select_labeled(tr, img, gt_ratio, seed), skipped)


def write_manifests(m: Manifests, out_dir: str | Path) -> None:
    """Write the three manifests, rows sorted by id so file order carries no pairing.

    `images.parquet` always has `lat` and `lon` (float64, NaN-filled when the adapter gave none), so every
    stage downstream can rely on the columns existing.

    `skipped.csv` (file, line, reason) is always written, header-only when nothing was dropped, so it is a
    stable artifact a rule can declare.
    """
    out_dir = Path(out_dir)
    if m.images.image_id.duplicated().any():
        dup = m.images.image_id[m.images.image_id.duplicated()].iloc[0]
        raise ValueError(f"duplicate image_id {dup} in the manifest")
    images = with_coordinates(m.images)
    base = IMAGE_COLUMNS + COORD_COLUMNS
    write_parquet(images.sort_values("image_id")[base + _extra(images, base)], out_dir / "images.parquet")
    write_parquet(m.truth.sort_values(["ground_id", "satellite_id"]).reset_index(drop=True),
                  out_dir / "truth.parquet")
    write_parquet(m.labeled.sort_values("ground_id").reset_index(drop=True), out_dir / "labeled.parquet")
    write_skipped(m.skipped, out_dir / "skipped.csv")


def with_coordinates(images: pd.DataFrame) -> pd.DataFrame:
    """`images` with float64 `lat`/`lon` columns: added as NaN when missing, cast when present."""
    out = images.copy()
    for col in COORD_COLUMNS:
        out[col] = out[col].astype(np.float64) if col in out.columns else np.full(len(out), np.nan)
    return out


def write_skipped(skipped: pd.DataFrame | None, path: str | Path) -> None:
    """Write the dropped entries as CSV, sorted, atomically."""
    df = empty_skipped() if skipped is None or skipped.empty else skipped[SKIPPED_COLUMNS]
    with atomic_path(path) as tmp:
        df.sort_values(SKIPPED_COLUMNS).to_csv(tmp, index=False)


def _extra(df: pd.DataFrame, base: list[str]) -> list[str]:
    return [c for c in df.columns if c not in base]


def read_images(manifest_dir: str | Path) -> pd.DataFrame:
    return read_parquet(Path(manifest_dir) / "images.parquet", IMAGE_COLUMNS)


def read_truth(manifest_dir: str | Path) -> pd.DataFrame:
    return read_parquet(Path(manifest_dir) / "truth.parquet", TRUTH_COLUMNS)


def read_labeled(manifest_dir: str | Path) -> pd.DataFrame:
    return read_parquet(Path(manifest_dir) / "labeled.parquet", LABELED_COLUMNS)


def image_ids(images: pd.DataFrame, view: str, split: str) -> np.ndarray:
    """Ids of one (view, split), sorted: the row order every array of that set follows."""
    sel = images[(images.view == view) & (images.split == split)]
    return np.sort(sel.image_id.to_numpy(dtype=object))
