"""How much of a training step is feeding: the fed cross-view step against the bare model step; run by hand.

fed   the step as `cvgl cross-view` runs it: the batch's rows gathered from memory-mapped uint8 caches on disk
      (by `--workers` DataLoader processes, pinned, ahead of the step; in the process with 0), moved to the
      device, jointly flipped/rotated and photometrically augmented there, forward, InfoNCE, backward, AdamW step.
bare  forward, InfoNCE, backward and step on the same batches, already on the device as floats (no gather, no
      augmentation).

The ratio fed/bare throughput is the figure (1.0 = feeding costs nothing). The caches are written to a temporary
directory with random pixels at the model's input sizes, `--images` rows each, so the gather reads a real file.
`--files` measures `data.cache: false` instead: `--images` JPEG files per view at the dataset's own sizes
(`--source-ground`, `--source-satellite`; CVUSA's 224x1232 and 750x750 by default; smooth content that
compresses like a photo), which the fed step decodes and resizes at every read.

    python benchmarks/train_throughput.py                                   # the demo's model and sizes, CPU
    python benchmarks/train_throughput.py --files --workers 1               # decoding CVUSA-sized JPEGs
    python benchmarks/train_throughput.py --backbone convnext_base --head safa --ground 384 384 \
        --satellite 384 384 --batch 64 --device cuda                        # the paper's, on a GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cvgl.augment import unit_images
from cvgl.io import read_image_cache, write_file_list, write_image_cache
from cvgl.losses import info_nce
from cvgl.models import resolve_device
from cvgl.train import build_model, cross_view_stage, feed_batches, loader_workers, seeded_generator, setup_torch


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_jpegs(folder: Path, n: int, hw: tuple[int, int], rng: np.random.Generator) -> list[Path]:
    """n smooth random colour fields (a coarse grid upsampled) as JPEG quality 90, like a dataset's photos."""
    folder.mkdir()
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (max(2, hw[0] // 32), max(2, hw[1] // 32), 3), dtype=np.uint8)
        paths.append(folder / f"{i:06d}.jpg")
        Image.fromarray(coarse).resize((hw[1], hw[0]), Image.BILINEAR).save(paths[-1], quality=90)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="convnext_atto")
    ap.add_argument("--head", default="gem")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--ground", type=int, nargs=2, default=[32, 128])
    ap.add_argument("--satellite", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="gathering workers (default: as data.workers null)")
    ap.add_argument("--files", action="store_true", help="data.cache: false: decode JPEG files at every read")
    ap.add_argument("--source-ground", type=int, nargs=2, default=[224, 1232], help="with --files: panorama HxW")
    ap.add_argument("--source-satellite", type=int, default=750, help="with --files: tile side")
    a = ap.parse_args()
    setup_torch(a.threads, 0)
    device = resolve_device(a.device)
    cfg = {"seed": 0, "device": a.device, "precision": "auto", "threads": a.threads,
           "model": {"backbone": a.backbone, "head": a.head, "dim": a.dim, "ground_size": a.ground,
                     "satellite_size": a.satellite},
           "optim": {"lr": 1e-4, "weight_decay": 0.01, "batch_size": a.batch},
           "augment": {}, "stage": {"epochs": 1, "smoothing": 0.3}}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"ground": tuple(a.source_ground), "satellite": (a.source_satellite, a.source_satellite)}
        for view, hw in (("ground", a.ground), ("satellite", a.satellite)):
            ids = [f"{view[0]}{i}" for i in range(a.images)]
            if a.files:
                files = write_jpegs(Path(tmp) / view, a.images, sources[view], rng)
                write_file_list(files, ids, tuple(hw), Path(tmp) / f"{view}.files.parquet")
            else:
                write_image_cache(rng.integers(0, 256, (a.images, *hw, 3), dtype=np.uint8), ids,
                                  Path(tmp) / f"{view}.npy")
        suffix = ".files.parquet" if a.files else ".npy"
        _, ground = read_image_cache(Path(tmp) / f"ground{suffix}", threads=a.threads)
        _, satellite = read_image_cache(Path(tmp) / f"satellite{suffix}", threads=a.threads)
        model, optimizer = build_model(cfg, None, device)
        model.train()
        stage = cross_view_stage(model, ground, satellite, cfg, device, 0)
        gen = seeded_generator(0, "throughput")
        plans = [b for _, b in zip(range(a.steps + 1), stage.batches(0, gen), strict=False)]

        def step(loss: torch.Tensor) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        workers = loader_workers({"data": {"workers": a.workers}}, device)
        for plan, pixels in feed_batches(stage, plans[:1], device, 0):  # warm-up: allocator, kernels, page cache
            step(stage.loss(plan, pixels, gen))
        synchronise(device)
        start = time.perf_counter()
        for plan, pixels in feed_batches(stage, plans[1:], device, workers):
            step(stage.loss(plan, pixels, gen))
        synchronise(device)
        fed = (time.perf_counter() - start) / a.steps
        on_device = [tuple(unit_images(x.to(device)) for x in stage.fetch(p)) for p in plans[1:]]
        synchronise(device)
        start = time.perf_counter()
        for g, s in on_device:
            ge, se, scale = model(g, s)
            step(info_nce(ge, se, scale, 0.3))
        synchronise(device)
        bare = (time.perf_counter() - start) / a.steps
    source = (f"decoded from {a.source_ground[0]}x{a.source_ground[1]} / {a.source_satellite} px JPEGs"
              if a.files else "memory-mapped caches")
    print(f"{a.backbone} {a.ground[0]}x{a.ground[1]} / {a.satellite[0]}x{a.satellite[1]}, batch {a.batch}, "
          f"{device.type}, {a.threads} threads, {workers} loader workers, {a.steps} steps, {source}")
    print(f"fed step  {fed * 1000:8.1f} ms  ({a.batch / fed:7.1f} pairs/s)")
    print(f"bare step {bare * 1000:8.1f} ms  ({a.batch / bare:7.1f} pairs/s)")
    print(f"fed / bare throughput: {bare / fed:.3f}")


if __name__ == "__main__":
    main()
