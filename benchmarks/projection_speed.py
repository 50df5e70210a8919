"""How fast is the BEV projection with one cached sampling grid, against the official per-image grid? (issue 4)

Synthetic panoramas (smooth random colour plus noise, numpy; no dataset needed) at the two published sizes:
CVUSA (1232 x 224 band, completed to 1232 x 616 as docs/method.md §2.1, -> 750 x 750, fov 175) and CVACT
(1664 x 832 -> 1200 x 1200, fov 170). One run, side by side, on the same images:

1. projection only (uint8 panorama in memory -> uint8 BEV), one process:
   * official: the published CFP/GeometricProjection scripts per image -- complete the CVUSA band
     (cv2.warpPerspective when cv2 is installed, else the identical integer-row paste), rebuild the float32
     torch grid (get_BEV_projection: rotation, ray angles), `grid_sample` one image, truncate to uint8;
   * cvgl: `bev_sampling_grid` built once (its build is inside the timing) and `project_to_bev` on batches,
     rounded to uint8 -- one image per call, and `--batch` images per call;
   plus the largest difference of the float BEVs from the official ones (same projection: float32 noise only).
2. files end to end (JPEG decode -> project -> PNG encode, `cvgl.projection.project_files`): in one process
   with max(--workers) threads (the previous `project` stage: thread-pool decode, torch threads, PNGs saved one
   by one) vs. batches on each `--workers` count of processes; every variant must write byte-identical PNGs.

    python benchmarks/projection_speed.py [--images 32] [--batch 8] [--workers 1,2] [--threads 1] [--sizes cvusa,cvact]
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cvgl.geometry import bev_sampling_grid, project_to_bev, to_uint8
from cvgl.io import load_images, save_image
from cvgl.projection import bev_images, project_files


@dataclass(frozen=True)
class Size:
    name: str
    pano_hw: tuple[int, int]  # as stored (the CVUSA band, not the completed panorama)
    out: int
    fov_deg: float
    band: bool


SIZES = {"cvusa": Size("CVUSA", (224, 1232), 750, 175.0, True),
         "cvact": Size("CVACT", (832, 1664), 1200, 170.0, False)}


def synthetic_panoramas(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8: bilinearly upsampled random colours plus noise (codecs see image-like content)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, *hw, 3), dtype=np.uint8)
    for i in range(n):
        coarse = rng.integers(0, 256, (max(2, hw[0] // 8), hw[1] // 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((hw[1], hw[0]), Image.BILINEAR), dtype=np.int16)
        out[i] = np.clip(smooth + rng.integers(-8, 9, smooth.shape), 0, 255)
    return out


# --- the official per-image path (CFP/GeometricProjection/{CVUSA,CVACT}.py + utils.py), reimplemented ---------


def official_complete(band: np.ndarray) -> np.ndarray:
    """CVUSA.py: translate the band down by t_y = (W/2 - H)/2 - 20 onto a black W x W/2 canvas."""
    height, width = band.shape[:2]
    ty = (width / 2 - height) / 2 - 20
    try:
        import cv2
    except ImportError:  # an integer translation samples pixel centres exactly: warpPerspective is a copy
        canvas = np.zeros((width // 2, width, 3), dtype=band.dtype)
        canvas[int(ty):int(ty) + height] = band
        return canvas
    return cv2.warpPerspective(band, np.array([[1, 0, 0], [0, 1, ty], [0, 0, 1]], dtype=np.float64),
                               (int(width), int(height + (width / 2 - height))))


def _rotation_xyz(angles: torch.Tensor) -> torch.Tensor:
    """pytorch3d's euler_angles_to_matrix(angles, "XYZ") = Rx @ Ry @ Rz (the identity here: dx = dy = 0)."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones(()), torch.zeros(())
    rx = torch.stack([one, zero, zero, zero, c[0], -s[0], zero, s[0], c[0]]).reshape(3, 3)
    ry = torch.stack([c[1], zero, s[1], zero, one, zero, -s[1], zero, c[1]]).reshape(3, 3)
    rz = torch.stack([c[2], -s[2], zero, s[2], c[2], zero, zero, zero, one]).reshape(3, 3)
    return rx @ ry @ rz


def official_grid(out_size: int, fov_deg: float) -> torch.Tensor:
    """utils.get_BEV_projection with dx = dy = 0, delta = 0: the (S, S, 2) float32 grid, rebuilt per image."""
    fov = fov_deg * math.pi / 180
    r20 = torch.inverse(_rotation_xyz(torch.zeros(3)))
    f = out_size / 2 / torch.tan(torch.tensor(fov / 2))
    idx = torch.arange(out_size)
    rays = torch.zeros((out_size, out_size, 3))
    rays[:, :, 0] = out_size / 2 - (torch.ones((out_size, out_size)) * idx).T
    rays[:, :, 1] = out_size / 2 - torch.ones((out_size, out_size)) * idx
    rays[:, :, 2] = -torch.ones((out_size, out_size)) * f
    xyz = r20 @ rays.reshape((-1, 3)).T
    torch.sqrt(torch.sum(xyz ** 2, 0))  # the published code computes the (unused) ray length too
    rho = torch.sqrt(torch.sum(xyz[:2, :] ** 2, 0))
    theta = torch.arctan2(xyz[2, :], rho) + math.pi / 2
    phi = torch.arctan2(xyz[1, :], xyz[0, :]) + math.pi
    grid = torch.zeros((out_size, out_size, 2))
    grid[:, :, 0] = (1 - phi / (2 * math.pi)).reshape((out_size, out_size))
    grid[:, :, 1] = (1 - theta / math.pi).reshape((out_size, out_size))
    grid[:, :, 0] = (grid[:, :, 0] - 0.5) / 0.5
    grid[:, :, 1] = (grid[:, :, 1] - 0.5) / 0.5
    return grid


def official_float(pano: np.ndarray, size: Size) -> torch.Tensor:
    """One panorama through the official path, before its truncation: (S, S, 3) float."""
    image = official_complete(pano) if size.band else pano
    grid = official_grid(size.out, size.fov_deg)
    frame = torch.from_numpy(image.copy())
    bev = F.grid_sample(frame.permute(2, 0, 1).unsqueeze(0).float(), grid.unsqueeze(0), align_corners=True)
    return bev.permute(0, 2, 3, 1).squeeze(0)


def official_uint8(panos: np.ndarray, size: Size) -> list[np.ndarray]:
    return [official_float(p, size).int().numpy().astype(np.uint8) for p in panos]


# --- cvgl ------------------------------------------------------------------------------------------------------


def cvgl_float(panos: np.ndarray, size: Size) -> torch.Tensor:
    """(B, C, S, S) float BEVs of a batch with the cached grid."""
    return project_to_bev(torch.from_numpy(panos).permute(0, 3, 1, 2).float(), size.out, size.fov_deg, size.band)


def cvgl_uint8(panos: np.ndarray, size: Size, batch: int) -> list[np.ndarray]:
    bev_sampling_grid.cache_clear()  # the one grid build is part of the measured work
    out: list[np.ndarray] = []
    for i in range(0, len(panos), batch):
        out.extend(bev_images(cvgl_float(panos[i:i + batch], size)))
    return out


def max_float_difference(panos: np.ndarray, size: Size) -> float:
    return max(float((cvgl_float(p[None], size)[0].permute(1, 2, 0) - official_float(p, size)).abs().max())
               for p in panos)


# --- files end to end ------------------------------------------------------------------------------------------


def previous_stage(sources: list[Path], targets: list[Path], size: Size, batch: int, threads: int) -> None:
    """The `project` stage before worker processes: thread-pool decode, torch threads, PNGs saved one by one."""
    torch.set_num_threads(threads)
    for i in range(0, len(sources), batch):
        panos = load_images(sources[i:i + batch], size.pano_hw, threads)
        bev = to_uint8(cvgl_float(panos, size).permute(0, 2, 3, 1))
        for image, target in zip(bev, targets[i:i + batch], strict=True):
            save_image(image, target)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def header(title: str) -> None:
    print(title)
    print(f"  {'variant':<52} {'images/s':>8}  {'speed-up':>8}")


def row(label: str, n: int, seconds: float, reference: float) -> None:
    print(f"  {label:<52} {n / seconds:8.2f}  {reference / seconds:7.2f}x", flush=True)


def bench_memory(size: Size, panos: np.ndarray, batch: int, threads: int) -> None:
    torch.set_num_threads(threads)
    n = len(panos)
    header(f"{size.name} {size.pano_hw[1]}x{size.pano_hw[0]} -> {size.out}x{size.out}, fov {size.fov_deg:g}: "
           f"projection only (uint8 in memory), {n} images, {threads} torch thread(s)")
    t_off, off = timed(lambda: official_uint8(panos, size))
    row("official: grid rebuilt + grid_sample per image", n, t_off, t_off)
    t_one, one = timed(lambda: cvgl_uint8(panos, size, 1))
    row("cvgl: cached grid, 1 image per call", n, t_one, t_off)
    t_bat, bat = timed(lambda: cvgl_uint8(panos, size, batch))
    row(f"cvgl: cached grid, batches of {batch}", n, t_bat, t_off)
    if not all(np.array_equal(a, b) for a, b in zip(one, bat, strict=True)):
        raise AssertionError("batched and per-image cvgl BEVs differ")
    uint8_diff = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(off, bat, strict=True))
    print(f"  max |cvgl - official| of the float BEVs: {max_float_difference(panos[:4], size):.2e} (first 4 images); "
          f"of the uint8 BEVs: {uint8_diff} (official truncates, cvgl rounds)")


def bench_files(size: Size, panos: np.ndarray, batch: int, workers: list[int]) -> None:
    n = len(panos)
    header(f"{size.name}: files end to end (JPEG decode -> project -> PNG encode), {n} images, batches of {batch}")
    threads = max(workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = [root / f"{i}.jpg" for i in range(n)]
        for pano, path in zip(panos, sources, strict=True):
            Image.fromarray(pano).save(path, quality=90)
        outputs: dict[str, list[Path]] = {}

        def run(key: str, fn: Callable[[list[Path]], None]) -> float:
            (root / key).mkdir()
            outputs[key] = [root / key / f"{i}.png" for i in range(n)]
            return timed(lambda: fn(outputs[key]))[0]

        t_ref = run("threads", lambda dst: previous_stage(sources, dst, size, batch, threads))
        row(f"previous stage: 1 process, {threads} threads", n, t_ref, t_ref)
        for w in workers:
            seconds = run(f"w{w}", lambda dst, w=w: project_files(sources, dst, size.pano_hw, size.out, size.fov_deg,
                                                                    size.band, batch, w))
            row(f"cvgl.projection: {w} worker processes" if w > 1 else "cvgl.projection: 1 process, 1 thread", n,
                seconds, t_ref)
        reference = [p.read_bytes() for p in outputs["threads"]]
        same = all([p.read_bytes() for p in paths] == reference for paths in outputs.values())
        worker_mb, own_mb = (resource.getrusage(who).ru_maxrss / 1024
                             for who in (resource.RUSAGE_CHILDREN, resource.RUSAGE_SELF))
        print(f"  PNGs byte-identical across all variants: {same}; peak RSS so far: {worker_mb:.0f} MB for the "
              f"largest worker (pages shared with this process counted), {own_mb:.0f} MB for this process")
        if not same:
            raise AssertionError("the variants wrote different PNGs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="panoramas per size")
    ap.add_argument("--batch", type=int, default=8, help="images per call / per worker task")
    ap.add_argument("--workers", default="1,2", help="worker counts of the files section; its one-process "
                    "reference (the previous stage) uses the largest as its thread count")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the projection-only section")
    ap.add_argument("--sizes", default="cvusa,cvact", help="comma-separated subset of: " + ", ".join(SIZES))
    ap.add_argument("--skip-files", action="store_true", help="projection only (no JPEG/PNG section)")
    a = ap.parse_args()
    workers = [int(w) for w in a.workers.split(",")]
    for key in a.sizes.split(","):
        size = SIZES[key]
        panos = synthetic_panoramas(a.images, size.pano_hw, seed=0)
        bench_memory(size, panos, a.batch, a.threads)
        if not a.skip_files:
            bench_files(size, panos, a.batch, workers)


if __name__ == "__main__":
    main()
