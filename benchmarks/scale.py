"""A CVUSA-sized stand-in: the workflow end to end on CVUSA's counts and image sizes, per stage time, memory, disk.

Writes a dataset in the CVUSA layout (`splits/{train,val}-19zl.csv`, `bingmap/19/`, `streetview/panos/`) with N
train pairs and N/4 test pairs (CVUSA: 35,532 + 8,884) at CVUSA's sizes: 1232x224 panoramas, 750x750 tiles, JPEG.
The images are cheap procedural ones (smooth colour fields, made in parallel), not the synthetic renderer, and
no panorama belongs to its tile: the run measures cost, not accuracy. Then it runs the README's real-data
command on it: `configs/cvusa.yaml` as shipped plus a file that makes the model small (convnext_atto, random
init, 64x64 inputs, one epoch per stage, one round) and turns on the colour translation and the projection prior
with CSLS (cvgl's opt-ins, the costliest label path; the prior's `correlation` metric by default, as a CPU
user at this size would pick it, `--prior-metric l1` for the absolute differences). Projection (750 px BEVs,
JPEG), translation and the prior touch full-size pixels at full size. Per stage it prints wall time, peak RSS
and USS of the job and its children (Snakemake's benchmark files) and the disk its outputs hold.

    python benchmarks/scale.py --n 2000 9000 35532 [--workdir /scratch/cvgl-scale] [--cores 2]

`--layout vigor` does the same for VIGOR's data stages (`configs/vigor.yaml`, all four cities, same-area): N
panoramas at VIGOR's 2048x1024 (JPEG) over the four cities, N x 90,618 / 105,214 tiles at 640x640 (PNG), each
panorama's positive and three semi-positives among its city's tiles, then the manifest and the four image caches
at the paper config's inputs (384x768 panoramas, 384x384 tiles; same-area lists every tile in both splits).
VIGOR's full count (`--n 105214`) needs about 180 GB of disk for the caches alone:

    python benchmarks/scale.py --layout vigor --n 5000 10000 [--workdir /scratch/cvgl-scale]

`--no-cache` runs either with `data.cache: false`: no pixel caches, every read decodes the image files again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PANO_HW, TILE = (224, 1232), 750
TEST_SHARE = 8_884 / 35_532
SMALL = """\
threads: {cores}
model: {{backbone: convnext_atto, pretrained: false, head: gem, dim: 256, ground_size: [64, 64],
        satellite_size: [64, 64]}}
optim: {{batch_size: 128}}
coldstart: {{intra: {{epochs: 1}}, cross: {{epochs: 1}}}}
rounds: {{count: 1, epochs: 1}}
translate: {{method: colour}}
labels: {{prior_weight: 2.0, csls_k: 10, prior_metric: {metric}}}
"""
#: Each rule's outputs, for the disk column (globs under results/<run>/).
OUTPUTS = {"manifest": ["manifest"], "cache_images": ["cache"], "project": ["projected"],
           "translate": ["translated", "translator"], "prior": ["prior"], "intra_view": ["coldstart"],
           "cross_view": ["round-0/model.pt"], "embed": ["round-*/embeddings"],
           "pseudo_label": ["round-*/matches.parquet"], "train_round": ["round-1/model.pt"],
           "evaluate": ["round-*/metrics.json"]}


def smooth_image(seed: int, hw: tuple[int, int]) -> np.ndarray:
    """A smooth random colour field (a coarse grid upsampled): compresses like a photo, costs microseconds."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, hw[0] // 32), max(2, hw[1] // 32), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((hw[1], hw[0]), Image.BILINEAR))


def write_pair(args: tuple[Path, int]) -> None:
    root, i = args
    Image.fromarray(smooth_image(2 * i, (TILE, TILE))).save(root / f"bingmap/19/{i:07d}.jpg", quality=90)
    Image.fromarray(smooth_image(2 * i + 1, PANO_HW)).save(root / f"streetview/panos/{i:07d}.jpg", quality=90)


def write_dataset(root: Path, n: int, workers: int) -> float:
    """The CVUSA layout with n train and n/4 test pairs; returns seconds."""
    start = time.perf_counter()
    n_test = round(n * TEST_SHARE)
    for d in ("splits", "bingmap/19", "streetview/panos"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, ids in (("train-19zl.csv", range(1, n + 1)), ("val-19zl.csv", range(n + 1, n + n_test + 1))):
        (root / "splits" / name).write_text("".join(
            f"bingmap/19/{i:07d}.jpg,streetview/panos/{i:07d}.jpg,streetview/annotations/{i:07d}.png\n" for i in ids))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_pair, [(root, i) for i in range(1, n + n_test + 1)], chunksize=64))
    return time.perf_counter() - start


VIGOR_PANO_HW, VIGOR_TILE = (1024, 2048), 640
VIGOR_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
VIGOR_TILE_SHARE = 90_618 / 105_214
#: Tile centres step this many degrees (about 70 m in latitude); a panorama's four tiles are its grid cell's corners.
VIGOR_STEP = 6.25e-4


def write_vigor_image(args: tuple[Path, int, bool]) -> None:
    path, seed, tile = args
    hw = (VIGOR_TILE, VIGOR_TILE) if tile else VIGOR_PANO_HW
    Image.fromarray(smooth_image(seed, hw)).save(path, **({} if tile else {"quality": 90}))


def write_vigor_dataset(root: Path, n: int, workers: int) -> float:
    """The VIGOR layout with n panoramas and n x 90,618 / 105,214 tiles over the four cities, half the panoramas
    in each city's same-area train list; returns seconds. Tiles lie on a grid per city; each panorama sits in one
    grid cell, its positive the nearest corner and the other three corners its semi-positives (pixel offsets from
    the cell's geometry), names carrying coordinates as VIGOR's do."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    jobs: list[tuple[Path, int, bool]] = []
    for c, city in enumerate(VIGOR_CITIES):
        n_pano = n // 4 + (c < n % 4)
        side = max(2, int(np.ceil(np.sqrt(n_pano * VIGOR_TILE_SHARE))))
        rows = max(2, int(np.ceil(n_pano * VIGOR_TILE_SHARE / side)))
        lat0, lon0 = 40.0 + c, -80.0 - c
        tiles = {(i, j): f"satellite_{lat0 + i * VIGOR_STEP!r}_{lon0 + j * VIGOR_STEP!r}.png"
                 for i in range(rows) for j in range(side)}
        for sub in ("satellite", "panorama"):
            (root / city / sub).mkdir(parents=True, exist_ok=True)
        (root / "splits" / city).mkdir(parents=True, exist_ok=True)
        (root / "splits" / city / "satellite_list.txt").write_text("".join(f"{t}\n" for t in tiles.values()))
        jobs += [(root / city / "satellite" / name, 10_000_000 * c + k, True) for k, name in enumerate(tiles.values())]
        lines = []
        for p in range(n_pano):
            i, j = int(rng.integers(0, rows - 1)), int(rng.integers(0, side - 1))
            fi, fj = rng.random(2)  # the panorama's place within the cell, in steps
            name = f"p{c}_{p:06d},{lat0 + (i + fi) * VIGOR_STEP:.6f},{lon0 + (j + fj) * VIGOR_STEP:.6f},.jpg"
            corners = sorted(((i + di, j + dj) for di in (0, 1) for dj in (0, 1)),
                             key=lambda t: (t[0] - i - fi) ** 2 + (t[1] - j - fj) ** 2)
            fields = [name]
            for ti, tj in corners:  # positive first; offsets in tile pixels (a step is half a tile)
                d0, d1 = (i + fi - ti) * VIGOR_TILE / 2, (tj - j - fj) * VIGOR_TILE / 2
                fields += [tiles[ti, tj], f"{d0:.1f}", f"{d1:.1f}"]
            lines.append(" ".join(fields) + "\n")
            jobs.append((root / city / "panorama" / name, 10_000_000 * c + 5_000_000 + p, False))
        half = len(lines) // 2
        (root / "splits" / city / "same_area_balanced_train.txt").write_text("".join(lines[:half]))
        (root / "splits" / city / "same_area_balanced_test.txt").write_text("".join(lines[half:]))
        (root / "splits" / city / "pano_label_balanced.txt").write_text("".join(lines))
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_vigor_image, jobs, chunksize=32))
    return time.perf_counter() - start


def disk_mb(paths: list[Path]) -> float:
    total = 0
    for p in paths:
        files = [p] if p.is_file() else list(p.rglob("*")) if p.is_dir() else []
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total / 2**20


def stage_table(results: Path) -> pd.DataFrame:
    """Per rule: summed wall seconds and the largest peak RSS over its jobs, and the disk its outputs hold."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = tsv.stem.split("-")[0] if tsv.parent.name.startswith("round-") else (
            tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem)
        bench = pd.read_csv(tsv, sep="\t")
        rows.append({"stage": rule, "seconds": float(bench["s"].iloc[0]),
                     "max_rss_mb": float(bench["max_rss"].iloc[0]), "max_uss_mb": float(bench["max_uss"].iloc[0])})
    # USS leaves out pages shared with other processes; RSS counts the resident pages of memory-mapped caches too.
    table = pd.DataFrame(rows).groupby("stage").agg(seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"),
                                                    max_uss_mb=("max_uss_mb", "max"))
    table["disk_mb"] = [disk_mb([p for pattern in OUTPUTS.get(s, []) for p in results.glob(pattern)])
                        for s in table.index]
    return table.sort_values("seconds", ascending=False)


def run(n: int, workdir: Path, cores: int, metric: str = "correlation", cache: bool = True) -> pd.DataFrame:
    root, work = workdir / f"CVUSA-{n}", workdir / f"run-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if not (root / "splits" / "val-19zl.csv").exists():
        print(f"[scale] writing {n} + {round(n * TEST_SHARE)} pairs: {write_dataset(root, n, cores):.0f} s",
              file=sys.stderr, flush=True)
    small = work / "small.yaml"
    small.write_text(SMALL.format(cores=cores, metric=metric) + NO_CACHE * (not cache))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", str(cores),
           "--configfile", str(REPO / "configs" / "cvusa.yaml"), str(small),
           "--config", f"dataset={{root: {root}}}", "--", "results/cvusa-unsupervised/summary.csv"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"[scale] N={n}: the workflow failed:\n{proc.stderr[-4000:]}")
    wall = time.perf_counter() - start
    table = stage_table(work / "results" / "cvusa-unsupervised")
    print(f"\nN = {n} train pairs ({round(n * TEST_SHARE)} test), workflow wall {wall:.0f} s, dataset "
          f"{disk_mb([root]):.0f} MB, results/ {disk_mb([work / 'results']):.0f} MB")
    print(table.round(1).to_string())
    return table.assign(n=n)


VIGOR_SMALL = """\
threads: {cores}
dataset: {{cities: [Chicago, NewYork, SanFrancisco, Seattle]}}
"""
#: `--no-cache`: the image caches list files that every read decodes again.
NO_CACHE = "data: {cache: false}\n"


def run_vigor(n: int, workdir: Path, cores: int, cache: bool = True) -> pd.DataFrame:
    """VIGOR's data stages (manifest, the four caches at the paper config's inputs, or with `cache` False their
    file lists) on an n-panorama stand-in."""
    root, work = workdir / f"VIGOR-{n}", workdir / f"vigor-run-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if not (root / "splits" / "Seattle" / "same_area_balanced_test.txt").exists():
        print(f"[scale] writing {n} VIGOR panoramas and {round(n * VIGOR_TILE_SHARE)} tiles: "
              f"{write_vigor_dataset(root, n, cores):.0f} s", file=sys.stderr, flush=True)
    small = work / "small.yaml"
    small.write_text(VIGOR_SMALL.format(cores=cores) + NO_CACHE * (not cache))
    results = "results/vigor-same-area"
    suffix = ".npy" if cache else ".files.parquet"
    targets = [f"{results}/cache/{split}-{view}{suffix}" for split in ("train", "test")
               for view in ("ground", "satellite")]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", str(cores),
           "--configfile", str(REPO / "configs" / "vigor.yaml"), str(small),
           "--config", f"dataset={{root: {root}}}", "--", *targets]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"[scale] VIGOR N={n}: the workflow failed:\n{proc.stderr[-4000:]}")
    wall = time.perf_counter() - start
    table = stage_table(work / results)
    print(f"\nVIGOR stand-in: {n} panoramas, {round(n * VIGOR_TILE_SHARE)} tiles, data stages wall {wall:.0f} s, "
          f"dataset {disk_mb([root]):.0f} MB, results/ {disk_mb([work / 'results']):.0f} MB")
    print(table.round(1).to_string())
    return table.assign(n=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[2000, 9000, 35532])
    ap.add_argument("--workdir", type=Path, default=Path("results/scale"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--prior-metric", default="correlation", choices=["correlation", "l1"],
                    help="labels.prior_metric of the run")
    ap.add_argument("--layout", default="cvusa", choices=["cvusa", "vigor"],
                    help="vigor: VIGOR's image sizes, N panoramas over four cities, the data stages only")
    ap.add_argument("--no-cache", action="store_true",
                    help="data.cache: false (no pixel caches; every read decodes the image files again)")
    a = ap.parse_args()
    if a.layout == "vigor":
        tables = [run_vigor(n, a.workdir, a.cores, not a.no_cache) for n in a.n]
    else:
        tables = [run(n, a.workdir, a.cores, a.prior_metric, not a.no_cache) for n in a.n]
    if len(tables) > 1:
        wide = pd.concat(tables).reset_index().pivot(index="stage", columns="n", values=["seconds", "max_rss_mb"])
        print("\nGrowth (seconds and peak RSS in MB by N):")
        print(wide.round(1).to_string())


if __name__ == "__main__":
    main()
