"""Rendering of the synthetic world: north-up satellite tiles and ground panoramas (CVUSA band or full 2:1).

Both renderers use the conventions of :mod:`cvgl.geometry`, so that ``project_to_bev`` of a panorama of a flat
world reproduces its (unstyled) tile: tile pixels sit at :func:`bev_ground_offsets_m`, panorama columns look
along :func:`pano_column_azimuth` and rows along :func:`pano_row_depression` (CVUSA band placement when
``RenderSpec.band``, else the full -90..+90 degree equirectangular rows of CVACT/VIGOR).

The panorama is ray-marched per azimuth column over the height maps (vectorised over all columns): the
elevation angle of every sample's top is accumulated with a running maximum, and the first sample whose
running maximum reaches a pixel row's elevation is where that row's ray is stopped (see
:func:`_first_crossing`). The ray then landed on a top surface (ground, roof) or hit a side (facade, trunk).
Tree crowns float above the ground and are marched in a second pass, so the camera sees trunks and the
ground below them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cvgl.geometry import bev_ground_offsets_m, pano_column_azimuth, pano_row_depression
from cvgl.synth.world import World, fbm_noise

SKY_HORIZON = np.array([206, 216, 228], np.float32)
SKY_ZENITH = np.array([84, 132, 204], np.float32)
CLOUD_COLOUR = np.array([236, 236, 240], np.float32)
WINDOW_COLOUR = np.array([58, 70, 86], np.float32)
CAR_COLOURS = np.array([[235, 235, 235], [30, 30, 34], [128, 130, 134], [170, 40, 36], [40, 66, 130],
                        [200, 200, 205], [90, 92, 96]], np.float32)
#: Ray slopes (tan of the elevation) are clipped to +-_SLOPE_CLIP: far steeper than any band row, so the
#: clipping never changes a comparison, and the per-column ranges stay bounded for :func:`_first_crossing`.
#: Full panoramas have steeper rows (up to the zenith/nadir); their queries are clipped just beyond the range
#: (+-_QUERY_CLIP), which keeps the exact answers "never" (steeper up) and "first sample" (steeper down).
_SLOPE_CLIP = 20.0
_QUERY_CLIP = _SLOPE_CLIP + 0.5
_COLUMN_STRIDE = 2 * _SLOPE_CLIP + 1.0


@dataclass(frozen=True)
class RenderKnobs:
    """Camera geometry and the two sensor styles: the rendering knobs ``SynthConfig`` exposes."""

    tile_size: int = 128
    pano_width: int = 512
    camera_height: float = 2.0
    fov_deg: float = 175.0
    max_view_distance_m: float = 300.0
    fog_distance_m: float = 350.0
    pano_row_supersample: int = 1
    cloud_cover: float = 0.35
    sat_gain: tuple[float, float, float] = (0.92, 0.98, 1.1)
    sat_bias: tuple[float, float, float] = (12.0, 8.0, -4.0)
    sat_gamma: float = 1.0
    sat_jitter: float = 0.08
    sat_blur_sigma: float = 0.8
    sat_noise: float = 3.0
    sat_shadow_strength: float = 0.45
    sat_sun_elevation_deg: tuple[float, float] = (35.0, 65.0)
    sat_sun_azimuth_deg: tuple[float, float] = (110.0, 250.0)
    sat_offset_m: float = 4.0
    sat_cars_per_100m: float = 5.0
    cam_gain: tuple[float, float, float] = (1.08, 1.0, 0.88)
    cam_gamma: float = 0.85
    cam_jitter: float = 0.12
    cam_vignette: float = 0.25
    cam_noise: float = 2.5
    cam_blur_sigma: float = 0.5
    cam_heading_jitter_deg: float = 3.0


@dataclass(frozen=True)
class RenderSpec(RenderKnobs):
    """What the renderer needs: the knobs plus the derived panorama height and the style switch."""

    pano_height: int = 93
    #: True: a CVUSA band of a W x W/2 canvas (``pano_height`` rows placed as in docs/method.md §2.1); False: the
    #: full equirectangular panorama, rows spanning -90..+90 degrees (CVACT, VIGOR; ``pano_height`` = W/2).
    band: bool = True
    #: False renders bare geometry (geometry tests): no fog, GPS offset, compass error, cars, shadows or
    #: sensor styles.
    styled: bool = True


# ------------------------------------------------------------------------------------ raster lookups


def _nearest(raster: np.ndarray, world: World, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup at world-local metres, clamped to the world edge."""
    r, c = world.to_pixel(x, y)
    r = np.clip(np.rint(r), 0, raster.shape[0] - 1).astype(np.intp)
    c = np.clip(np.rint(c), 0, raster.shape[1] - 1).astype(np.intp)
    return raster[r, c]


def _flat(raster: np.ndarray) -> np.ndarray:
    """View of an (H, W, ...) raster as (H * W, ...), for lookups by flat pixel index."""
    return raster.reshape(raster.shape[0] * raster.shape[1], *raster.shape[2:])


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an (h, w, 3) image at fractional pixel coordinates (edge-clamped), float32."""
    h, w = image.shape[:2]
    rows = np.clip(rows, 0, h - 1)
    cols = np.clip(cols, 0, w - 1)
    r0 = np.minimum(np.floor(rows).astype(np.intp), h - 2 if h > 1 else 0)
    c0 = np.minimum(np.floor(cols).astype(np.intp), w - 2 if w > 1 else 0)
    fr = (rows - r0)[..., None].astype(np.float32)
    fc = (cols - c0)[..., None].astype(np.float32)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


@dataclass(frozen=True)
class GroundMipmap:
    """Mip-map of the ground colour packed side by side into one atlas (level k = 2^k x 2^k box average),
    so that trilinear (footprint-filtered) lookups of far ground need one gather per level bracket."""

    atlas: np.ndarray  # (H0, sum of level widths, 3) uint8
    col_offset: np.ndarray  # (L,) first atlas column of each level
    heights: np.ndarray  # (L,) rows of each level
    widths: np.ndarray  # (L,) columns of each level

    @property
    def levels(self) -> int:
        return len(self.col_offset)


def ground_pyramid(world: World, levels: int = 7) -> GroundMipmap:
    """Build the ground colour mip-map of ``world`` (once per world; lookups reuse it)."""
    pyramid = [world.ground_rgb]
    for _ in range(1, levels):
        prev = pyramid[-1].astype(np.float32)
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        if h < 2 or w < 2:
            break
        half = (prev[0:h:2, 0:w:2] + prev[1:h:2, 0:w:2] + prev[0:h:2, 1:w:2] + prev[1:h:2, 1:w:2]) / 4
        pyramid.append(np.rint(half).astype(np.uint8))
    widths = np.array([p.shape[1] for p in pyramid])
    atlas = np.zeros((pyramid[0].shape[0], int(widths.sum()), 3), np.uint8)
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    for level, off in zip(pyramid, offsets, strict=True):
        atlas[: level.shape[0], off: off + level.shape[1]] = level
    return GroundMipmap(atlas, offsets, np.array([p.shape[0] for p in pyramid]), widths)


def _mip_bilinear(mip: GroundMipmap, level: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup at level-0 pixel coordinates on per-sample integer mip levels."""
    scale = 2.0 ** level
    r = np.clip((rows + 0.5) / scale - 0.5, 0, mip.heights[level] - 1)
    c = np.clip((cols + 0.5) / scale - 0.5, 0, mip.widths[level] - 1)
    r0, c0 = np.floor(r).astype(np.intp), np.floor(c).astype(np.intp)
    fr, fc = (r - r0)[:, None].astype(np.float32), (c - c0)[:, None].astype(np.float32)
    r1 = np.minimum(r0 + 1, mip.heights[level] - 1)
    c1 = np.minimum(c0 + 1, mip.widths[level] - 1) + mip.col_offset[level]
    c0 = c0 + mip.col_offset[level]
    a = mip.atlas
    return (a[r0, c0] * (1 - fc) + a[r0, c1] * fc) * (1 - fr) + (a[r1, c0] * (1 - fc) + a[r1, c1] * fc) * fr


def _ground_colour(mip: GroundMipmap, world: World, x: np.ndarray, y: np.ndarray,
                   footprint_m: np.ndarray) -> np.ndarray:
    """Trilinear ground colour: bilinear on the two mip levels bracketing the pixel footprint."""
    level = np.clip(np.log2(np.maximum(footprint_m, 1e-6) / world.resolution), 0, mip.levels - 1)
    lo = np.floor(level).astype(np.intp)
    hi = np.minimum(lo + 1, mip.levels - 1)
    frac = (level - lo)[:, None].astype(np.float32)
    rows, cols = world.to_pixel(x, y)
    return _mip_bilinear(mip, lo, rows, cols) * (1 - frac) + _mip_bilinear(mip, hi, rows, cols) * frac


# ------------------------------------------------------------------------------------ image filters


def gaussian_blur(image: np.ndarray, sigma: float, wrap_columns: bool = False) -> np.ndarray:
    """Separable Gaussian blur of an (h, w, c) float image (reflect rows; columns reflect or wrap)."""
    if sigma <= 0:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = image.astype(np.float32)
    # Rows first, then columns; each pass sums shifted slices of the padded image.
    padded = np.pad(out, [(radius, radius)] + [(0, 0)] * (image.ndim - 1), mode="reflect")
    out = sum(t * padded[i: i + out.shape[0]] for i, t in enumerate(taps))
    padded = np.pad(out, [(0, 0), (radius, radius)] + [(0, 0)] * (image.ndim - 2),
                    mode="wrap" if wrap_columns else "reflect")
    return sum(t * padded[:, i: i + out.shape[1]] for i, t in enumerate(taps)).astype(np.float32)


def _apply_style(rgb: np.ndarray, rng: np.random.Generator, gain, bias, gamma: float, jitter: float,
                 noise: float) -> np.ndarray:
    """Global colour gain/bias, per-image exposure + white-balance jitter, gamma and sensor noise."""
    exposure = 1 + rng.normal(0, jitter)
    white_balance = 1 + rng.normal(0, jitter / 2, 3)
    image_gain = np.asarray(gain, np.float32) * exposure * white_balance
    out = rgb * image_gain + np.asarray(bias, np.float32)
    if gamma != 1.0:
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** gamma
    return out + np.float32(noise) * rng.standard_normal(out.shape, dtype=np.float32)


# ------------------------------------------------------------------------------------ satellite tile


def render_tile(world: World, x: float, y: float, spec: RenderSpec,
                rng: np.random.Generator) -> np.ndarray:
    """North-up orthographic tile (S, S, 3) float centred on (x, y), spanning the BEV's metric extent.

    Styled tiles are centred up to ``sat_offset_m`` away (GPS error between the two captures), show parked
    and moving cars of their own capture time, cast shadows, and get the satellite sensor style.
    """
    size = spec.tile_size
    east, north = bev_ground_offsets_m(size, spec.fov_deg, spec.camera_height)
    if spec.styled and spec.sat_offset_m > 0:
        angle, radius = rng.uniform(0, 2 * math.pi), spec.sat_offset_m * math.sqrt(rng.uniform(0, 1))
        x, y = x + radius * math.sin(angle), y + radius * math.cos(angle)
    # One bilinear sample per pixel: tile pixels are only ~1.4 world pixels wide, so this barely aliases.
    r, c = world.to_pixel(x + east, y + north)
    colour = _bilinear(world.top_rgb, r, c)
    if not spec.styled:
        return colour
    _draw_cars(world, colour, x, y, float(east[0, 1] - east[0, 0]), spec, rng)
    sun_az = math.radians(rng.uniform(*spec.sat_sun_azimuth_deg))
    sun_el = math.radians(rng.uniform(*spec.sat_sun_elevation_deg))
    shadow = _cast_shadows(world, x + east, y + north, sun_az, sun_el)
    shadow = gaussian_blur(shadow[..., None], 0.7)[..., 0]
    colour *= (1.0 - spec.sat_shadow_strength * shadow)[..., None]
    colour = gaussian_blur(colour, spec.sat_blur_sigma)
    return _apply_style(colour, rng, spec.sat_gain, spec.sat_bias, spec.sat_gamma, spec.sat_jitter,
                        spec.sat_noise)


def _draw_cars(world: World, colour: np.ndarray, x: float, y: float, metres_per_px: float, spec: RenderSpec,
               rng: np.random.Generator) -> None:
    """Paint cars (4.5 x 1.9 m, road-aligned, in a lane) on the roads of a tile, in place."""
    size = colour.shape[0]
    half = size / 2 * metres_per_px
    pts = world.road_points
    near = pts[(np.abs(pts[:, 0] - x) < half) & (np.abs(pts[:, 1] - y) < half)]
    if len(near) == 0 or spec.sat_cars_per_100m <= 0:
        return
    n = rng.poisson(spec.sat_cars_per_100m * len(near) * 2 / 100)  # road points are 2 m apart
    idx = np.arange(size) - size / 2
    east, north = idx[None, :] * metres_per_px, -idx[:, None] * metres_per_px
    for px, py, width, dx, dy in near[rng.integers(0, len(near), n)]:
        lane = rng.uniform(-width / 3, width / 3)
        cx, cy = px - x - dy * lane, py - y + dx * lane
        along = (east - cx) * dx + (north - cy) * dy
        across = -(east - cx) * dy + (north - cy) * dx
        body = (np.abs(along) <= 2.25) & (np.abs(across) <= 0.95)
        paint = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1)
        colour[body] = paint


def _cast_shadows(world: World, xs: np.ndarray, ys: np.ndarray, sun_az: float, sun_el: float) -> np.ndarray:
    """1 where the top surface at (xs, ys) is shadowed by a taller surface towards the sun, else 0."""
    top = world.top_height
    here = _nearest(top, world, xs, ys)
    reach = world.max_height / math.tan(sun_el)
    step = 2.0 * world.resolution  # ~ one tile pixel: finer steps would not change the mask
    to_sun = np.array([math.sin(sun_az), math.cos(sun_az)])
    shadow = np.zeros(xs.shape, bool)
    for s in np.arange(step, reach + step, step):
        blocker = _nearest(top, world, xs + s * to_sun[0], ys + s * to_sun[1])
        shadow |= blocker > here + s * math.tan(sun_el) + 0.1
    return shadow.astype(np.float32)


# ------------------------------------------------------------------------------------ ground panorama


@lru_cache(maxsize=8)
def _march_distances(max_distance: float) -> np.ndarray:
    """Sample distances along a ray: 0.35 m steps near the camera, then 2 % geometric growth."""
    d, out = 0.35, []
    while d < max_distance:
        out.append(d)
        d += max(0.35, 0.02 * d)
    return np.array(out)


def _first_crossing(slope: np.ndarray, tan_beta: np.ndarray) -> np.ndarray:
    """For column c and ray slope tan_beta[r]: the first sample k with max(slope[c, :k+1]) >= tan_beta[r].

    ``slope`` = (surface height - camera height) / distance: the tangent of the sample's elevation angle,
    monotone in the angle, so comparing slopes is comparing angles (without arctan). Running maxima are
    non-decreasing per column; adding a per-column offset makes the whole flattened array sorted, so one
    ``searchsorted`` answers all (column, row) queries. K means "never".
    """
    cols, samples = slope.shape
    offset = _COLUMN_STRIDE * np.arange(cols)[:, None]
    running = np.maximum.accumulate(np.clip(slope, -_SLOPE_CLIP, _SLOPE_CLIP), axis=1) + offset
    query = np.clip(tan_beta, -_QUERY_CLIP, _QUERY_CLIP)[None, :] + offset
    idx = np.searchsorted(running.ravel(), query.ravel(), side="left")
    return idx.reshape(cols, tan_beta.size) - np.arange(cols)[:, None] * samples


@dataclass
class _Rays:
    """The march of one panorama: W columns x K samples, and the pixel rows' ray slopes."""

    x: float
    y: float
    cam: float
    sin_psi: np.ndarray  # (W, 1)
    cos_psi: np.ndarray  # (W, 1)
    tan_beta: np.ndarray  # (1, R) slope of each (sub-)row's ray, > 0 above the horizon
    row_step: float  # angle between two (sub-)rows, radians
    d: np.ndarray  # (K,) sample distances
    cell: np.ndarray  # (W, K) flat world pixel index of every sample

    def sample(self, raster: np.ndarray) -> np.ndarray:
        """(W, K) values of a world raster at the march samples (nearest pixel)."""
        return _flat(raster)[self.cell]

    def at(self, raster: np.ndarray, k: np.ndarray) -> np.ndarray:
        """(W, R) values of a world raster at sample k[c, r] of each column."""
        return _flat(raster)[np.take_along_axis(self.cell, k, axis=1)]

    def point(self, dist: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World coordinates of the masked pixels' rays at distance ``dist`` (full (W, R) arrays)."""
        sin_psi = np.broadcast_to(self.sin_psi, mask.shape)[mask]
        cos_psi = np.broadcast_to(self.cos_psi, mask.shape)[mask]
        return self.x + dist[mask] * sin_psi, self.y + dist[mask] * cos_psi


def _cast_rays(world: World, x: float, y: float, spec: RenderSpec, heading: float = 0.0) -> _Rays:
    """Set up the march: column azimuths and row elevations follow :mod:`cvgl.geometry` exactly
    (``heading``: small compass error of the camera, radians)."""
    H, W, ss = spec.pano_height, spec.pano_width, spec.pano_row_supersample
    psi = pano_column_azimuth(np.arange(W), W) + heading
    sub_rows = (np.arange(H * ss) + 0.5) / ss - 0.5
    tan_beta = np.tan(-pano_row_depression(sub_rows, (H, W), band=spec.band))[None, :]
    d = _march_distances(spec.max_view_distance_m)
    sin_psi, cos_psi = np.sin(psi)[:, None], np.cos(psi)[:, None]
    r, c = world.to_pixel(x + sin_psi * d[None, :], y + cos_psi * d[None, :])
    r = np.clip(np.rint(r), 0, world.shape[0] - 1).astype(np.intp)
    c = np.clip(np.rint(c), 0, world.shape[1] - 1).astype(np.intp)
    row_step = math.pi / (W / 2 - 1) / ss  # canvas rows span 180 degrees (docs/method.md §2.2)
    return _Rays(x, y, spec.camera_height, sin_psi, cos_psi, tan_beta, row_step, d, r * world.shape[1] + c)


def render_panorama(world: World, pyramid: GroundMipmap, x: float, y: float, spec: RenderSpec,
                    rng: np.random.Generator) -> np.ndarray:
    """Panorama (H, W, 3) float of the camera at (x, y), ``camera_height`` above the ground: the CVUSA band or,
    with ``spec.band`` False, the full 2:1 equirectangular panorama (centre column north in both)."""
    heading = math.radians(rng.normal(0.0, spec.cam_heading_jitter_deg)) if spec.styled else 0.0
    rays = _cast_rays(world, x, y, spec, heading)
    colour = _sky(rng, rays.tan_beta[0], spec)
    dist = _draw_solid(world, pyramid, rays, colour, sun=rng.uniform(0, 2 * math.pi))
    _draw_crowns(world, rays, colour, dist)
    if spec.styled:
        fog = 1.0 - np.exp(-np.minimum(dist, 4 * spec.fog_distance_m) / spec.fog_distance_m)[..., None]
        colour = np.where(np.isfinite(dist)[..., None], colour * (1 - fog) + SKY_HORIZON * fog, colour)
    H, W, ss = spec.pano_height, spec.pano_width, spec.pano_row_supersample
    pano = colour.transpose(1, 0, 2).reshape(H, ss, W, 3).mean(axis=1)
    return _camera_style(pano, rng, spec) if spec.styled else pano


def _draw_solid(world: World, mip: GroundMipmap, rays: _Rays, colour: np.ndarray, sun: float) -> np.ndarray:
    """Ray-march ground, buildings and trunks; paint hits into ``colour`` (W, R, 3); return hit distances
    (inf for sky). A hit is a *top* hit (the ray came down onto the surface between two samples: exact
    distance where it reaches that height) or a *side* hit (it ran into a wall or trunk)."""
    cam, d, tanb = rays.cam, rays.d, rays.tan_beta
    solid = rays.sample(world.solid_height)
    k = _first_crossing((solid - cam) / d[None, :], tanb[0])
    hit = k < d.size
    kk = np.minimum(k, d.size - 1)
    d_k = d[kk]
    d_prev = np.where(k > 0, d[np.maximum(kk - 1, 0)], 0.0)
    h_k = np.take_along_axis(solid, kk, axis=1)
    descending = tanb < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d_top = np.where(descending, (cam - h_k) / -tanb, np.inf)  # where the ray reaches height h_k
        d_ground = np.where(descending, cam / -tanb, np.inf)
    top = hit & descending & (h_k < cam) & (d_top > d_prev)
    side = hit & ~top
    ground = (top & (h_k <= 0)) | (~hit & descending)  # beyond the march range: flat ground
    dist = np.where(side, d_k, np.where(top, d_top, np.where(ground, d_ground, np.inf)))
    if ground.any():
        dg = dist[ground]
        # Pixel footprint on the ground: geometric mean of its radial (row) and tangential (column) extent.
        radial = dg**2 / cam * rays.row_step
        tangential = dg * 2 * math.pi / (dist.shape[0] - 1)
        colour[ground] = _ground_colour(mip, world, *rays.point(dist, ground), np.sqrt(radial * tangential))
    low_top = top & ~ground
    if low_top.any():
        r, c = world.to_pixel(*rays.point(dist, low_top))
        colour[low_top] = _bilinear(world.top_rgb, r, c)
    if side.any():
        z = np.clip(cam + d_k * tanb, 0, h_k)[side]
        xs, ys = rays.point(d_k, side)
        colour[side] = _side_colour(world, rays.at(world.side_rgb, kk)[side],
                                    rays.at(world.building_id, kk)[side], xs, ys, z, sun)
    return dist


def _draw_crowns(world: World, rays: _Rays, colour: np.ndarray, dist: np.ndarray) -> None:
    """Second pass for floating tree crowns (in place): a ray is stopped by the first crown whose top is
    above it, unless it passes under that crown's bottom (it then keeps the solid/ground hit)."""
    high = rays.sample(world.crown_high)
    if not (high > 0).any():
        return
    cam, d, tanb = rays.cam, rays.d, rays.tan_beta
    k = _first_crossing(np.where(high > 0, (high - cam) / d[None, :], -_SLOPE_CLIP), tanb[0])
    kk = np.minimum(k, d.size - 1)
    z = cam + d[kk] * tanb
    low = rays.at(world.crown_low, kk)
    hit = (k < d.size) & (z >= low) & (d[kk] < dist)
    if not hit.any():
        return
    dist[hit] = d[kk][hit]
    leaf = rays.at(world.top_rgb, kk)[hit].astype(np.float32)
    # Crowns are lit from above: darker underneath, brighter towards the top.
    crown_top = np.take_along_axis(high, kk, axis=1)[hit]
    lift = np.clip((z[hit] - low[hit]) / np.maximum(crown_top - low[hit], 0.1), 0, 1)
    colour[hit] = leaf * (0.55 + 0.45 * lift)[:, None]


def _side_colour(world: World, base: np.ndarray, bid: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                 z: np.ndarray, sun: float) -> np.ndarray:
    """Facade (windows, floor bands, sun-dependent wall shading) or trunk colour at side hits.

    ``base``/``bid``: side colour and building id of the hit samples; (xs, ys, z): the hit points.
    """
    base = base.astype(np.float32)
    out = base * 0.8  # trunks: bark in the shade of the crown
    wall = bid > 0
    if not wall.any():
        return out
    cx, cy, cos_t, sin_t, hu, hv, floor_h = world.buildings[bid[wall]].T
    u = (xs[wall] - cx) * cos_t + (ys[wall] - cy) * sin_t
    v = -(xs[wall] - cx) * sin_t + (ys[wall] - cy) * cos_t
    on_u_face = np.abs(u) / hu >= np.abs(v) / hv  # the hit is on a face perpendicular to the u axis
    normal_x = np.where(on_u_face, np.sign(u) * cos_t, -np.sign(v) * sin_t)
    normal_y = np.where(on_u_face, np.sign(u) * sin_t, np.sign(v) * cos_t)
    light = 0.6 + 0.4 * np.maximum(0.0, normal_x * math.sin(sun) + normal_y * math.cos(sun))
    along = np.where(on_u_face, v, u)
    zw = z[wall]
    window = ((np.mod(zw / floor_h, 1.0) > 0.35) & (np.mod(zw / floor_h, 1.0) < 0.78)
              & (np.mod(along / 2.6, 1.0) > 0.22) & (np.mod(along / 2.6, 1.0) < 0.72) & (zw > 1.2))
    facade = np.where(window[:, None], WINDOW_COLOUR, base[wall]) * light[:, None]
    out[wall] = facade
    return out


def _sky(rng: np.random.Generator, tan_beta: np.ndarray, spec: RenderSpec) -> np.ndarray:
    """(W, R, 3) sky: horizon-to-zenith gradient with random clouds (a nuisance unrelated to location)."""
    width, supersample = spec.pano_width, spec.pano_row_supersample
    t = np.clip(np.arctan(tan_beta) / (math.pi / 2), 0, 1) ** 0.6
    grad = (SKY_HORIZON[None] * (1 - t[:, None]) + SKY_ZENITH[None] * t[:, None]).astype(np.float32)
    sky = np.broadcast_to(grad[None], (width, tan_beta.size, 3))
    if spec.cloud_cover <= 0:
        return sky.copy()
    # Clouds at output row resolution (no need to supersample soft blobs).
    field = fbm_noise(rng, (width, tan_beta.size // supersample), max(4.0, width / 16), 3)
    field = np.repeat(field, supersample, axis=1)
    cut = int((1 - spec.cloud_cover) * (field.size - 1))
    threshold = np.partition(field.ravel(), cut)[cut]
    cloud = np.clip((field - threshold) * 1.5, 0, 1)[..., None]
    return sky * (1 - cloud) + CLOUD_COLOUR * cloud


def _camera_style(pano: np.ndarray, rng: np.random.Generator, spec: RenderSpec) -> np.ndarray:
    """Ground camera look: blur, vignetting of the four stitched sub-cameras, colour/gamma, noise."""
    pano = gaussian_blur(pano, spec.cam_blur_sigma, wrap_columns=True)
    width = pano.shape[1]
    phase = np.mod(np.arange(width) / width * 4 + rng.uniform(0, 1), 1.0) - 0.5  # -0.5..0.5 per camera
    vignette = 1 - spec.cam_vignette * (2 * phase) ** 2
    pano = pano * vignette[None, :, None].astype(np.float32)
    return _apply_style(pano, rng, spec.cam_gain, (0.0, 0.0, 0.0), spec.cam_gamma, spec.cam_jitter,
                        spec.cam_noise)
