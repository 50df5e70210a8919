"""Spherical-transform projection of ground panoramas onto the ground plane (bird's-eye view, BEV).

Implements docs/method.md §2.1 (CVUSA panorama completion) and §2.2 (virtual downward pinhole camera at the
panorama centre). Conventions, shared by the synthetic renderer so that its images line up exactly:

* BEV up = panorama centre column = north; BEV right = column 3W/4 = east; columns 0 and W-1 face south.
* BEV pixel (i, j) casts the ray n = S/2 - i (north), w = S/2 - j (west), z = -f (down) with
  f = (S/2) / tan(F/2). Its depression below the horizon is alpha = atan(f / rho), rho = sqrt(n^2 + w^2),
  and its azimuth (clockwise from north) is psi = atan2(-w, n).
* Normalised panorama coordinates u = 1/2 + psi / (2 pi), v = 1/2 + alpha / pi are sampled bilinearly with
  ``grid_sample(align_corners=True)`` semantics (pixel u * (W-1), v * (H-1)), zero outside the image.
* CVUSA panoramas are bands of a W x W/2 full panorama pasted at row offset
  t_y = (W/2 - H)/2 - 20 * W/1232 (= 176 for the raw 1232 x 224 band). The 20 px upward shift of the official
  code is scaled with the width so that a resized CVUSA band keeps the same angular placement.
* Flat ground: a BEV pixel at radius rho is at ground distance h * rho / f for camera height h, so the BEV
  square spans +-h * tan(F/2) metres around the camera.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is made: the synthetic world and the config need only numpy
    import torch

#: Raw CVUSA band width and the official upward shift of the band (pixels at that width), docs/method.md §2.1.
CVUSA_RAW_WIDTH = 1232
CVUSA_RAW_HEIGHT = 224
CVUSA_BAND_SHIFT_PX = 20.0


def bev_focal_length(out_size: int, fov_deg: float) -> float:
    """Focal length in pixels of the virtual downward camera: f = (S/2) / tan(F/2)."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return (out_size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


def cvusa_band_height(pano_width: int) -> int:
    """Height of a CVUSA band of the given width, keeping the raw 1232:224 aspect."""
    return round(pano_width * CVUSA_RAW_HEIGHT / CVUSA_RAW_WIDTH)


def cvusa_band_offset(pano_width: int, band_height: int) -> float:
    """Row offset t_y of the band inside the W x W/2 canvas (176.0 for 1232 x 224).

    The 20 px shift of the official code is scaled by W/1232 so that any resized band keeps its angular
    placement; the result may be fractional, which the sampling grid handles exactly.
    """
    shift = CVUSA_BAND_SHIFT_PX * pano_width / CVUSA_RAW_WIDTH
    return (pano_width / 2.0 - band_height) / 2.0 - shift


def cvusa_band_rows(pano_width: int, band_height: int) -> tuple[float, float]:
    """(first_row, last_row) of the band inside the W x W/2 canvas, e.g. (176.0, 399.0) for 1232 x 224."""
    top = cvusa_band_offset(pano_width, band_height)
    return top, top + band_height - 1.0


def _bev_angles(out_size: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth psi (clockwise from north) and depression alpha (below the horizon) of every BEV pixel."""
    f = bev_focal_length(out_size, fov_deg)
    idx = np.arange(out_size, dtype=np.float64)
    north = out_size / 2.0 - idx[:, None]  # grows towards the image top
    west = out_size / 2.0 - idx[None, :]  # grows towards the image left
    north, west = np.broadcast_arrays(north, west)
    rho = np.hypot(north, west)
    alpha = np.arctan2(f, rho)
    psi = np.arctan2(-west, north)
    return psi, alpha


def _canvas_rows_to_pano_rows(v_norm: np.ndarray, pano_hw: tuple[int, int], band: bool) -> np.ndarray:
    """Map normalised full-panorama rows v in [0, 1] to (fractional) rows of the stored image."""
    height, width = pano_hw
    if not band:
        return v_norm * (height - 1)
    canvas_rows = v_norm * (width / 2.0 - 1.0)
    return canvas_rows - cvusa_band_offset(width, height)


def _bev_pano_coords(pano_hw: tuple[int, int], out_size: int, fov_deg: float, band: bool):
    """Fractional (column, row) of the stored panorama sampled by every BEV pixel."""
    height, width = pano_hw
    psi, alpha = _bev_angles(out_size, fov_deg)
    u_norm = 0.5 + psi / (2.0 * math.pi)
    v_norm = 0.5 + alpha / math.pi
    cols = u_norm * (width - 1)
    rows = _canvas_rows_to_pano_rows(v_norm, pano_hw, band)
    return cols, rows


@lru_cache(maxsize=32)
def bev_sampling_grid(pano_hw: tuple[int, int], out_size: int, fov_deg: float, band: bool) -> torch.Tensor:
    """(1, S, S, 2) float32 grid for ``F.grid_sample(..., align_corners=True)``.

    ``band=True`` applies the CVUSA completion inside the grid: rows outside the band fall outside [-1, 1]
    and sample zeros, exactly as the black canvas of the official code. ``band=False`` means a full 2:1
    panorama (CVACT). Cached per arguments; the returned tensor is shared, so never modify it in place.
    """
    height, width = pano_hw
    cols, rows = _bev_pano_coords((int(height), int(width)), int(out_size), float(fov_deg), bool(band))
    grid = np.stack([2.0 * cols / (width - 1) - 1.0, 2.0 * rows / (height - 1) - 1.0], axis=-1)
    import torch

    return torch.from_numpy(grid.astype(np.float32))[None]


def project_to_bev(panos: torch.Tensor, out_size: int, fov_deg: float, band: bool) -> torch.Tensor:
    """Project a batch of panoramas (B, C, H, W) (float) to BEV images (B, C, S, S), same dtype/device."""
    if panos.ndim != 4:
        raise ValueError(f"panos must be (B, C, H, W), got shape {tuple(panos.shape)}")
    if not panos.is_floating_point():
        raise TypeError(f"panos must be a float tensor, got {panos.dtype}")
    grid = bev_sampling_grid((panos.shape[2], panos.shape[3]), out_size, fov_deg, band)
    grid = grid.to(device=panos.device, dtype=panos.dtype).expand(panos.shape[0], -1, -1, -1)
    import torch.nn.functional as F

    return F.grid_sample(panos, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def bev_valid_mask(pano_hw: tuple[int, int], out_size: int, fov_deg: float, band: bool) -> np.ndarray:
    """Bool (S, S): BEV pixels whose sample lies inside the stored image rows (content exists there)."""
    height, _ = pano_hw
    _, rows = _bev_pano_coords((int(height), int(pano_hw[1])), int(out_size), float(fov_deg), bool(band))
    return (rows >= 0.0) & (rows <= height - 1)


def bev_half_extent_m(camera_height: float, fov_deg: float) -> float:
    """Metric half-extent of the BEV square: +-h * tan(F/2) metres (45.7 m for h = 2 m, F = 175 deg)."""
    return camera_height * math.tan(math.radians(fov_deg) / 2.0)


def ground_distance_per_pixel(out_size: int, fov_deg: float, camera_height: float) -> float:
    """Metres of flat ground per BEV pixel: h / f (a pixel at radius rho lies h * rho / f away)."""
    return camera_height / bev_focal_length(out_size, fov_deg)


def bev_ground_offsets_m(out_size: int, fov_deg: float,
                         camera_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(east, north) metric offsets from the camera of every BEV pixel centre, each (S, S) float64.

    Pixel (S/2, S/2) is the camera; a north-up satellite tile rendered on these offsets matches the BEV.
    """
    metres = ground_distance_per_pixel(out_size, fov_deg, camera_height)
    idx = np.arange(out_size, dtype=np.float64) - out_size / 2.0
    east = np.broadcast_to(idx[None, :] * metres, (out_size, out_size))
    north = np.broadcast_to(-idx[:, None] * metres, (out_size, out_size))
    return east.copy(), north.copy()


def pano_column_azimuth(cols: np.ndarray, pano_width: int) -> np.ndarray:
    """Azimuth (radians clockwise from north) seen by (fractional) panorama columns.

    Inverse of u = 1/2 + psi/(2 pi) with pixel = u * (W-1): the centre column faces north, 3W/4 east.
    """
    return (np.asarray(cols, dtype=np.float64) / (pano_width - 1) - 0.5) * 2.0 * math.pi


def pano_row_depression(rows: np.ndarray, pano_hw: tuple[int, int], band: bool) -> np.ndarray:
    """Depression below the horizon (radians, negative above it) seen by (fractional) panorama rows.

    Inverse of the row mapping of :func:`bev_sampling_grid`, including the CVUSA band placement.
    """
    height, width = pano_hw
    rows = np.asarray(rows, dtype=np.float64)
    if band:
        v_norm = (rows + cvusa_band_offset(width, height)) / (width / 2.0 - 1.0)
    else:
        v_norm = rows / (height - 1)
    return (v_norm - 0.5) * math.pi


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Round (not truncate, unlike the official code) and clip a float image in [0, 255] to uint8."""
    if not isinstance(image, np.ndarray):  # a tensor
        image = image.detach().cpu().numpy()
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
