"""Small datasets in published layouts, built on the fly (real file names and split formats, tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from cvgl.data.vigor import CITIES

#: Random draws of the CVACT and VIGOR fixtures (one stream, as the adapter tests have always drawn them).
RNG = np.random.default_rng(0)
ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"))
#: Centre of the CVACT fixture's `utm` (easting, northing): Canberra in UTM zone 55 south, like the release.
CVACT_UTM = (692_000.0, 6_092_000.0)


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


def random_image(path: Path, hw: tuple[int, int] = (8, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


def cvact_pano_id(n: int = 22) -> str:
    return "".join(RNG.choice(ALPHABET, n))


def write_cvact_fixture(root: Path, n_train: int = 6, n_val: int = 3, n_unused: int = 2, cell: bool = False,
                        test_full: int = 0, test_full_dir: bool = True) -> dict[str, list[str]]:
    """ACT_data.mat + streetview/ + satview_polish/ (+ ANU_data_test/ and valSetAll when `test_full`)."""
    n_all = n_train + n_val + n_unused + test_full
    ids = [cvact_pano_id(22 - (i % 3)) for i in range(n_all)]  # varying length: char-matrix rows get padded
    order = RNG.permutation(n_all)  # splits index panoIds out of order, as in the release
    split_ids = {"train": [ids[i] for i in order[:n_train]], "test": [ids[i] for i in order[n_train:n_train + n_val]],
                 "test_full": [ids[i] for i in order[n_all - test_full:]] if test_full else []}
    for split, pids in split_ids.items():
        base = root / "ANU_data_test" if split == "test_full" and test_full_dir else root
        for pid in pids:
            random_image(base / "streetview" / f"{pid}_grdView.jpg", (8, 16))
            random_image(base / "satview_polish" / f"{pid}_satView_polish.jpg", (8, 8))

    def col(split: str) -> np.ndarray:  # 1-based double column vector, like MATLAB's find()
        return np.array([ids.index(p) + 1 for p in split_ids[split]], dtype=np.float64).reshape(-1, 1)

    mat: dict = {
        "panoIds": np.array(ids, dtype=object).reshape(-1, 1) if cell else np.array(ids),
        # field #1 (the count) is read by no adapter; field #2 is the 1-based index vector
        "trainSet": {"trainNum": float(n_train), "trainInd": col("train")},
        "valSet": {"valNum": float(n_val), "valInd": col("test")},
        "utm": np.asarray(CVACT_UTM) + RNG.normal(size=(n_all, 2)) * 1000,  # around Canberra, zone 55 south
    }
    if test_full:
        mat["valSetAll"] = {"valNum": float(test_full), "valInd": col("test_full")}
    root.mkdir(parents=True, exist_ok=True)
    sio.savemat(root / "ACT_data.mat", mat)
    return split_ids


def vigor_tile_name(city_i: int, k: int) -> str:
    return f"satellite_{40 + city_i}.{k:06d}_-{80 + city_i}.{k:06d}.png"


def write_vigor_fixture(root: Path, cities: tuple[str, ...] = CITIES, n_tiles: int = 8,
                        n_train: dict[str, int] | None = None, n_test: int = 3) -> dict[str, dict[str, list[list]]]:
    """splits/<City>/{satellite_list, same_area_balanced_*, pano_label_balanced}.txt + <City>/{satellite,panorama}/.

    Each panorama gets a positive and three semi-positives (distinct tiles); tile 0 is the positive of the
    first two panoramas of each file (a shared tile). Returns city -> split -> rows (13 fields each).
    """
    n_train = n_train or {}
    out: dict[str, dict[str, list[list]]] = {}
    for ci, city in enumerate(cities):
        tiles = [vigor_tile_name(ci, k) for k in range(n_tiles)]
        for t in tiles:
            random_image(root / city / "satellite" / t, (8, 8))
        (root / "splits" / city).mkdir(parents=True, exist_ok=True)
        (root / "splits" / city / "satellite_list.txt").write_text("\n".join(tiles) + "\n")
        out[city] = {}
        for split, n in (("train", n_train.get(city, 4)), ("test", n_test)):
            rows = []
            for j in range(n):
                pano = f"{cvact_pano_id()},{40 + ci}.{j:06d},-{80 + ci}.{j:06d},.jpg"
                random_image(root / city / "panorama" / pano, (8, 16))
                picks = [0 if j < 2 else int(RNG.integers(n_tiles))]
                picks += [int(t) for t in RNG.permutation([t for t in range(n_tiles) if t != picks[0]])[:3]]
                row: list = [pano]
                for t in picks:
                    row += [tiles[t], round(float(RNG.uniform(-320, 320)), 4), round(float(RNG.uniform(-320, 320)), 4)]
                rows.append(row)
            (root / "splits" / city / f"same_area_balanced_{split}.txt").write_text(
                "".join(" ".join(map(str, r)) + "\n" for r in rows))
            out[city][split] = rows
        (root / "splits" / city / "pano_label_balanced.txt").write_text(
            "".join(" ".join(map(str, r)) + "\n" for s in ("train", "test") for r in out[city][s]))
    return out
