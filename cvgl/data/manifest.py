"""The dataset-independent manifests every stage downstream reads (design.md, "File schemas").

`images.parquet` lists every image with an opaque id; `truth.parquet` pairs them (read only by evaluation,
diagnostics and the labeled-subset choice); `labeled.parquet` is the `gt_ratio` share of the train truth,
the only truth training ever sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cvgl.io import read_parquet, write_parquet

IMAGE_COLUMNS = ["image_id", "view", "split", "path"]
TRUTH_COLUMNS = ["ground_id", "satellite_id", "kind"]
LABELED_COLUMNS = ["ground_id", "satellite_id"]


def opaque_id(view: str, rel_path: str, salt: str) -> str:
    """A stable id that hides the file name: a ground and its satellite share a stem on disk, not an id."""
    digest = hashlib.blake2b(f"{salt}\0{view}\0{rel_path}".encode(), digest_size=8).hexdigest()
    return f"{view[0]}{digest}"


@dataclass
class Manifests:
    images: pd.DataFrame
    truth: pd.DataFrame
    labeled: pd.DataFrame


def select_labeled(truth: pd.DataFrame, images: pd.DataFrame, gt_ratio: float, seed: int) -> pd.DataFrame:
    """Choose floor(gt_ratio * N_train) train positives with the seed (semi-supervised mode).

    Candidates are taken in ground-id order before the seeded permutation, so the choice depends only on the
    ids and the seed, never on the order the dataset lists its files in.
    """
    if not 0.0 <= gt_ratio <= 1.0:
        raise ValueError(f"rounds.gt_ratio must be within [0, 1], got {gt_ratio}")
    train_ground = set(images.loc[(images.view == "ground") & (images.split == "train"), "image_id"])
    pos = truth[(truth.kind == "positive") & truth.ground_id.isin(train_ground)]
    pos = pos.sort_values("ground_id").reset_index(drop=True)
    n = int(np.floor(gt_ratio * len(pos) + 1e-9))
    order = np.random.default_rng(seed).permutation(len(pos))[:n]
    return pos.iloc[np.sort(order)][LABELED_COLUMNS].reset_index(drop=True)


def write_manifests(m: Manifests, out_dir: str | Path) -> None:
    """Write the three manifests, rows sorted by id so file order carries no pairing."""
    out_dir = Path(out_dir)
    if m.images.image_id.duplicated().any():
        dup = m.images.image_id[m.images.image_id.duplicated()].iloc[0]
        raise ValueError(f"duplicate image_id {dup} in the manifest")
    write_parquet(m.images.sort_values("image_id")[IMAGE_COLUMNS + _extra(m.images, IMAGE_COLUMNS)],
                  out_dir / "images.parquet")
    write_parquet(m.truth.sort_values(["ground_id", "satellite_id"]).reset_index(drop=True),
                  out_dir / "truth.parquet")
    write_parquet(m.labeled.sort_values("ground_id").reset_index(drop=True), out_dir / "labeled.parquet")


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
