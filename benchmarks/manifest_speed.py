"""How fast do the dataset adapters list a full-size dataset? (split files only, no image files, no pixels)

Writes synthetic split files in the published layouts into a temp dir -- CVUSA (`splits/*-19zl.csv`), VIGOR
(`splits/<City>/*.txt`, 13 columns) and CVACT (`ACT_data.mat`) -- with `--rows` listed pairs/panoramas each
(default 100,000), builds the manifests with `check_files=False`, and prints rows/s. PIL's `Image.open` is
replaced by a function that fails, so the numbers can only come from listing, never from decoding.

    python benchmarks/manifest_speed.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cvgl.data.cvact import build_cvact_manifests
from cvgl.data.cvusa import build_cvusa_manifests
from cvgl.data.manifest import Manifests, write_manifests
from cvgl.data.vigor import CITIES, build_vigor_manifests

TEST_SHARE = 0.2
VIGOR_TILES_PER_PANO = 90_618 / 105_214  # the published ratio of satellite tiles to panoramas


def write_cvusa(root: Path, n: int) -> None:
    n_test = int(n * TEST_SHARE)
    (root / "splits").mkdir(parents=True)
    for name, ids in (("train-19zl.csv", range(1, n - n_test + 1)), ("val-19zl.csv", range(n - n_test + 1, n + 1))):
        (root / "splits" / name).write_text("".join(
            f"bingmap/19/{i:07d}.jpg,streetview/panos/{i:07d}.jpg,streetview/annotations/{i:07d}.png\n" for i in ids))


def write_vigor(root: Path, n: int, rng: np.random.Generator) -> None:
    per_city = n // len(CITIES)
    n_tiles = max(4, int(per_city * VIGOR_TILES_PER_PANO))
    for ci, city in enumerate(CITIES):
        d = root / "splits" / city
        d.mkdir(parents=True)
        tiles = [f"satellite_{40 + ci}.{k:07d}_-{80 + ci}.{k:07d}.png" for k in range(n_tiles)]
        (d / "satellite_list.txt").write_text("\n".join(tiles) + "\n")
        picks = rng.integers(0, n_tiles, (per_city, 4))
        offs = rng.uniform(-320, 320, (per_city, 8))
        lines = [f"p{ci}_{j:07d},{40 + ci}.{j:07d},-{80 + ci}.{j:07d},.jpg "
                 + " ".join(f"{tiles[picks[j, k]]} {offs[j, 2 * k]:.4f} {offs[j, 2 * k + 1]:.4f}" for k in range(4))
                 + "\n" for j in range(per_city)]
        half = per_city // 2
        (d / "same_area_balanced_train.txt").write_text("".join(lines[:half]))
        (d / "same_area_balanced_test.txt").write_text("".join(lines[half:]))
        (d / "pano_label_balanced.txt").write_text("".join(lines))


def write_cvact(root: Path, n: int, rng: np.random.Generator) -> None:
    import scipy.io as sio

    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    ids = np.array(["".join(r) for r in rng.choice(alphabet, (n, 22))])
    order = rng.permutation(n) + 1.0
    n_test = int(n * TEST_SHARE)
    root.mkdir(parents=True)
    sio.savemat(root / "ACT_data.mat", {
        "panoIds": ids,
        "trainSet": {"trainNum": float(n - n_test), "trainInd": order[n_test:].reshape(-1, 1)},
        "valSet": {"valNum": float(n_test), "valInd": order[:n_test].reshape(-1, 1)}})


def timed(build: Callable[[], Manifests], repeat: int) -> tuple[float, Manifests]:
    best, m = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = build()
        best = min(best, time.perf_counter() - t0)
    return best, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="listed pairs/panoramas per dataset")
    ap.add_argument("--repeat", type=int, default=3, help="builds per dataset; the fastest is reported")
    args = ap.parse_args()

    def no_pixels(*_a: object, **_k: object) -> None:
        raise AssertionError("manifest listing tried to open an image")

    Image.open = no_pixels  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = {
            "cvusa": (write_cvusa, lambda r: build_cvusa_manifests(r, 0.1, 0, check_files=False)),
            "vigor": (lambda r, n: write_vigor(r, n, rng),
                      lambda r: build_vigor_manifests(r, 0.1, 0, check_files=False)),
            "cvact": (lambda r, n: write_cvact(r, n, rng),
                      lambda r: build_cvact_manifests(r, 0.1, 0, check_files=False)),
        }
        print(f"{'dataset':8} {'rows':>8} {'images':>8} {'truth':>8} {'build s':>8} {'rows/s':>10} {'write s':>8}")
        for name, (write, build) in cases.items():
            root = tmp / name
            write(root, args.rows)
            seconds, m = timed(lambda root=root, build=build: build(root), args.repeat)
            rows = int((m.truth.kind == "positive").sum())
            t0 = time.perf_counter()
            write_manifests(m, tmp / f"{name}-manifest")
            wsec = time.perf_counter() - t0
            print(f"{name:8} {rows:8d} {len(m.images):8d} {len(m.truth):8d} {seconds:8.2f} {rows / seconds:10.0f} "
                  f"{wsec:8.2f}", flush=True)


if __name__ == "__main__":
    main()
