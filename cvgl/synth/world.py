"""Procedural 2.5-D world for the synthetic CVUSA-like dataset: roads, ground patches, buildings, trees.

The world is a set of north-up rasters at ``resolution`` metres per pixel (row 0 = north edge). World-local
coordinates are metres with x = east and y = north; pixel (r, c) has its centre at
x = (c + 1/2) * res, y = (H - r - 1/2) * res. Everything is drawn from one ``numpy.random.Generator`` so the
world is a pure function of its seed.

What the renderers read (see :class:`World`):
* ``ground_rgb``: colour of the ground surface (what a ground camera sees on the floor, even under a crown),
* ``top_rgb``: colour seen from above (roofs and tree crowns painted over the ground),
* ``solid_height``: buildings and tree trunks (0 on the ground), ``crown_low``/``crown_high``: the vertical
  extent of tree crowns (a crown floats above the ground, so a ground camera sees the trunk below it),
* ``side_rgb`` + ``building_id``: base colour of vertical surfaces (facades, trunks) and which building a
  pixel belongs to (its orientation and floor height drive facade shading and windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

# Ground classes: (name, mean RGB, per-patch colour jitter, fine texture amplitude, sampling weight).
GROUND_CLASSES: tuple[tuple[str, tuple[float, float, float], float, float, float], ...] = (
    ("grass", (84, 122, 58), 14, 16, 3.0),
    ("dry_grass", (156, 146, 92), 14, 16, 2.0),
    ("soil", (126, 97, 70), 12, 14, 1.5),
    ("dark_soil", (88, 72, 58), 10, 12, 1.0),
    ("sand", (204, 186, 140), 12, 10, 1.0),
    ("concrete", (166, 166, 158), 10, 7, 1.0),
    ("gravel", (138, 132, 120), 10, 22, 1.0),
    ("crop", (98, 124, 54), 16, 10, 1.5),
)
CROP_CLASS = 7
ROOF_COLOURS = np.array(
    [[70, 70, 76], [172, 172, 168], [164, 84, 60], [110, 80, 60], [222, 220, 214], [94, 112, 98],
     [88, 100, 122], [190, 164, 118], [132, 60, 52], [48, 52, 58]], dtype=np.float32)
FACADE_COLOURS = np.array(
    [[206, 190, 160], [150, 76, 56], [226, 222, 210], [140, 140, 138], [214, 190, 112], [160, 180, 196],
     [200, 150, 140], [96, 90, 84], [178, 120, 84], [120, 136, 118]], dtype=np.float32)
TRUNK_COLOUR = np.array([92, 66, 46], dtype=np.float32)
ASPHALT_GREY = 84.0
SIDEWALK_COLOUR = np.array([176, 172, 164], dtype=np.float32)
MARKING_COLOUR = np.array([232, 230, 214], dtype=np.float32)
#: Minimum RGB distance between a building's roof and its facade (a roof never looks like its wall).
MIN_ROOF_FACADE_DISTANCE = 90.0
#: Lowest crown bottom (metres): cameras at CVUSA height (2 m) look under every crown.
MIN_CROWN_BOTTOM_M = 2.6


@dataclass(frozen=True)
class WorldSpec:
    """Knobs of the world itself (a slice of ``SynthConfig``)."""

    resolution: float = 0.5
    block_min_m: float = 70.0
    block_max_m: float = 190.0
    road_jitter_m: float = 10.0
    road_drop_prob: float = 0.2
    road_width_min_m: float = 5.0
    road_width_max_m: float = 14.0
    sidewalk_prob: float = 0.6
    curved_roads_per_km2: float = 3.0
    ground_patch_m: float = 30.0
    buildings_per_ha: float = 14.0
    building_frontage: float = 0.7
    building_size_min_m: float = 8.0
    building_size_max_m: float = 32.0
    building_height_min_m: float = 4.0
    building_height_max_m: float = 30.0
    building_setback_m: float = 2.0
    trees_per_ha: float = 30.0
    street_trees_per_100m: float = 6.0
    temporal_change: float = 0.5
    tree_height_min_m: float = 5.0
    tree_height_max_m: float = 15.0
    crown_radius_min_m: float = 1.5
    crown_radius_max_m: float = 4.5


@dataclass
class World:
    """Rasters of one procedural world (see the module docstring for coordinates)."""

    resolution: float
    ground_rgb: np.ndarray  # (H, W, 3) uint8
    top_rgb: np.ndarray  # (H, W, 3) uint8
    solid_height: np.ndarray  # (H, W) float32
    crown_low: np.ndarray  # (H, W) float32
    crown_high: np.ndarray  # (H, W) float32, 0 where there is no crown
    side_rgb: np.ndarray  # (H, W, 3) uint8
    building_id: np.ndarray  # (H, W) int32, 0 = none
    buildings: np.ndarray  # (N + 1, 7) float64: cx, cy, cos, sin, half_u, half_v, floor_height; row 0 unused
    road_points: np.ndarray  # (M, 5) float64: x, y, width, dir_x, dir_y along road centrelines

    @property
    def shape(self) -> tuple[int, int]:
        return self.solid_height.shape

    @property
    def size_m(self) -> tuple[float, float]:
        """(east-west, north-south) extent in metres."""
        return self.shape[1] * self.resolution, self.shape[0] * self.resolution

    @cached_property
    def top_height(self) -> np.ndarray:
        """Height of the highest surface (roof, crown or ground), used for cast shadows."""
        return np.maximum(self.solid_height, self.crown_high)

    @cached_property
    def max_height(self) -> float:
        """Tallest surface in the world (bounds how far a shadow can reach)."""
        return float(self.top_height.max()) if self.top_height.size else 0.0

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of world-local metric coordinates."""
        return self.shape[0] - y / self.resolution - 0.5, x / self.resolution - 0.5


# --------------------------------------------------------------------------------------------- noise


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth noise, roughly unit variance, with features of ``cell_px`` pixels (bicubic lattice noise)."""
    cell = max(1, int(round(cell_px)))
    if cell == 1:  # pixel-scale grain: interpolation would be the identity
        return rng.standard_normal(shape, dtype=np.float32)
    gh, gw = shape[0] // cell + 3, shape[1] // cell + 3
    lattice = rng.standard_normal((gh, gw)).astype(np.float32)
    # PIL's single-threaded bicubic resize: deterministic and fast for these sizes.
    up = np.asarray(Image.fromarray(lattice, mode="F").resize((gw * cell, gh * cell), Image.BICUBIC))
    oy, ox = int(rng.integers(0, cell)), int(rng.integers(0, cell))
    # Interpolation shrinks the variance; rescale so amplitudes mean the same at every cell size.
    return up[oy:oy + shape[0], ox:ox + shape[1]] * np.float32(1.6)


def fbm_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float, octaves: int) -> np.ndarray:
    """Fractal noise: octaves of :func:`value_noise` from ``cell_px`` down, amplitudes halving."""
    total = np.zeros(shape, dtype=np.float32)
    norm = 0.0
    for octave in range(octaves):
        amp = 0.5**octave
        total += amp * value_noise(rng, shape, max(1.0, cell_px / 2**octave))
        norm += amp * amp
    return total / math.sqrt(norm)


# ------------------------------------------------------------------------------------------- helpers


def _window(world_hw: tuple[int, int], res: float, x0: float, x1: float, y0: float, y1: float):
    """Pixel slices and pixel-centre coordinates (X, Y) of the raster window covering [x0,x1] x [y0,y1]."""
    height, width = world_hw
    c0, c1 = max(0, int(math.floor(x0 / res))), min(width, int(math.ceil(x1 / res)) + 1)
    r0, r1 = max(0, int(math.floor(height - y1 / res))), min(height, int(math.ceil(height - y0 / res)) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    xs = (np.arange(c0, c1) + 0.5) * res
    ys = (height - np.arange(r0, r1) - 0.5) * res
    return (slice(r0, r1), slice(c0, c1)), xs[None, :], ys[:, None]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] and cast (ufuncs: np.clip's Python wrapper is slow on the many tiny arrays here)."""
    return np.minimum(np.maximum(values, 0), 255).astype(np.uint8)


def _segment_distance(xs, ys, p, q) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points to segment pq and the position along it (metres from p)."""
    d = np.asarray(q) - np.asarray(p)
    length = float(np.hypot(*d)) or 1e-9
    ux, uy = d / length
    t = (xs - p[0]) * ux + (ys - p[1]) * uy
    tc = np.clip(t, 0.0, length)
    dist = np.hypot(xs - (p[0] + tc * ux), ys - (p[1] + tc * uy))
    return dist, t


# --------------------------------------------------------------------------------------------- roads


@dataclass
class _Road:
    points: np.ndarray  # (P, 2) polyline vertices, metres
    width: float
    sidewalk: float  # sidewalk width each side (0 = none)
    tone: float  # asphalt brightness offset
    centre_line: bool


def _grid_roads(rng: np.random.Generator, spec: WorldSpec, size: tuple[float, float]) -> list[_Road]:
    """Perturbed grid: random block sizes, jittered crossings, some segments dropped (T-junctions)."""
    width_m, height_m = size

    def lines(extent: float) -> np.ndarray:
        pos, out = float(rng.uniform(0.0, spec.block_max_m)), []
        while pos < extent:
            out.append(pos)
            pos += float(rng.uniform(spec.block_min_m, spec.block_max_m))
        return np.array(out)

    xl, yl = lines(width_m), lines(height_m)
    # Crossing (i, j) = (xl[i], yl[j]) moved by a jitter so roads are not perfectly straight.
    jitter = rng.uniform(-spec.road_jitter_m, spec.road_jitter_m, (len(xl), len(yl), 2))
    nodes = np.stack(np.meshgrid(xl, yl, indexing="ij"), axis=-1) + jitter
    roads: list[_Road] = []
    for axis, count in ((0, len(yl)), (1, len(xl))):
        for line in range(count):
            style = _road_style(rng, spec)
            chain = nodes[:, line] if axis == 0 else nodes[line, :]
            for a in range(len(chain) - 1):
                if rng.random() < spec.road_drop_prob:
                    continue
                roads.append(_Road(chain[a:a + 2].copy(), *style))
    return roads


def _road_style(rng: np.random.Generator, spec: WorldSpec) -> tuple[float, float, float, bool]:
    """(width, sidewalk width, asphalt tone, has centre line) of one road."""
    width = float(rng.uniform(spec.road_width_min_m, spec.road_width_max_m))
    sidewalk = float(rng.uniform(1.5, 3.0)) if rng.random() < spec.sidewalk_prob else 0.0
    tone = float(rng.normal(0.0, 12.0))
    return width, sidewalk, tone, width >= 8.0


def _curved_roads(rng: np.random.Generator, spec: WorldSpec, size: tuple[float, float]) -> list[_Road]:
    """Long winding roads at random headings, crossing the grid diagonally."""
    area_km2 = size[0] * size[1] / 1e6
    roads = []
    for _ in range(int(rng.poisson(spec.curved_roads_per_km2 * area_km2))):
        pos = rng.uniform((0.0, 0.0), size)
        heading = rng.uniform(0.0, 2 * math.pi)
        turn = 0.0
        pts = [pos.copy()]
        for _ in range(int(rng.uniform(30, 100))):
            turn = 0.8 * turn + rng.normal(0.0, 0.04)
            heading += turn
            pos = pos + 10.0 * np.array([math.sin(heading), math.cos(heading)])
            pts.append(pos.copy())
        roads.append(_Road(np.array(pts), *_road_style(rng, spec)))
    return roads


@dataclass
class _RoadRaster:
    road: np.ndarray  # bool, asphalt
    sidewalk: np.ndarray  # bool
    marking: np.ndarray  # bool
    tone: np.ndarray  # float32 asphalt brightness offset
    points: np.ndarray  # (M, 5) centreline samples x, y, width, dir_x, dir_y


def _draw_roads(roads: list[_Road], world_hw: tuple[int, int], res: float) -> _RoadRaster:
    """Rasterise road surfaces, sidewalks and dashed centre lines; collect centreline samples."""
    road = np.zeros(world_hw, bool)
    walk = np.zeros(world_hw, bool)
    mark = np.zeros(world_hw, bool)
    tone = np.zeros(world_hw, np.float32)
    samples = []
    for r in roads:
        reach = r.width / 2 + r.sidewalk
        for p, q in zip(r.points[:-1], r.points[1:], strict=True):
            lo, hi = np.minimum(p, q) - reach - res, np.maximum(p, q) + reach + res
            win = _window(world_hw, res, lo[0], hi[0], lo[1], hi[1])
            if win is None:
                continue
            (rs, cs), xs, ys = win
            dist, t = _segment_distance(xs, ys, p, q)
            on_road = dist <= r.width / 2
            road[rs, cs] |= on_road
            tone[rs, cs] = np.where(on_road, r.tone, tone[rs, cs])
            walk[rs, cs] |= dist <= reach
            if r.centre_line:
                mark[rs, cs] |= (dist < 0.15) & (np.mod(t, 6.0) < 3.0)
            samples.append(_centreline_samples(p, q, r.width))
    points = np.concatenate(samples) if samples else np.zeros((0, 5))
    return _RoadRaster(road, walk & ~road, mark & road, tone, points)


def _centreline_samples(p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """Points every 2 m along a segment with its width and unit direction."""
    d = q - p
    length = float(np.hypot(*d))
    n = max(1, int(length / 2.0))
    t = (np.arange(n) + 0.5) / n
    pts = p[None] + t[:, None] * d[None]
    direction = np.broadcast_to(d / max(length, 1e-9), (n, 2))
    return np.column_stack([pts, np.full(n, width), direction])


# ---------------------------------------------------------------------------------------- ground


def _patch_classes(rng: np.random.Generator, spec: WorldSpec, world_hw: tuple[int, int]):
    """Voronoi ground patches on a jittered lattice (boundaries warped by noise), computed at 2x coarser
    resolution for speed. Returns per-pixel patch index and the per-patch class array."""
    coarse = (world_hw[0] // 2 + 1, world_hw[1] // 2 + 1)
    cell = spec.ground_patch_m / (2 * spec.resolution)  # lattice cell in coarse pixels
    gh, gw = int(coarse[0] / cell) + 2, int(coarse[1] / cell) + 2
    seeds = (np.stack(np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij"), -1)
             + rng.uniform(0.1, 0.9, (gh, gw, 2))) * cell
    warp = cell * 0.35
    ry = np.arange(coarse[0], dtype=np.float32)[:, None] + warp * value_noise(rng, coarse, cell / 2)
    rx = np.arange(coarse[1], dtype=np.float32)[None, :] + warp * value_noise(rng, coarse, cell / 2)
    gy = np.clip((ry // cell).astype(np.int64), 0, gh - 1)
    gx = np.clip((rx // cell).astype(np.int64), 0, gw - 1)
    best = np.full(coarse, np.inf, np.float32)
    patch = np.zeros(coarse, np.int64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ny, nx = np.clip(gy + dy, 0, gh - 1), np.clip(gx + dx, 0, gw - 1)
            d = (seeds[ny, nx, 0] - ry) ** 2 + (seeds[ny, nx, 1] - rx) ** 2
            closer = d < best
            best = np.where(closer, d, best)
            patch = np.where(closer, ny * gw + nx, patch)
    patch = np.repeat(np.repeat(patch, 2, 0), 2, 1)[: world_hw[0], : world_hw[1]]
    weights = np.array([c[4] for c in GROUND_CLASSES])
    classes = rng.choice(len(GROUND_CLASSES), size=gh * gw, p=weights / weights.sum())
    return patch, classes


def _natural_ground(rng: np.random.Generator, spec: WorldSpec,
                    world_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Float RGB of the unbuilt ground at the two capture times: (ground camera, satellite).

    Patch colours, per-class fine texture and crop rows are shared; at the satellite's capture a share
    ``temporal_change`` of the patches looks different (re-seeded, mown, harvested, built over), so the two
    views agree on layout but not everywhere on appearance, as real image pairs taken years apart.
    """
    patch, classes = _patch_classes(rng, spec, world_hw)
    n_patch = classes.size
    jitter = np.array([c[2] for c in GROUND_CLASSES], np.float32)
    patch_rgb = _patch_colours(rng, classes, jitter)
    changed_class = rng.choice(len(GROUND_CLASSES), n_patch)
    changed = rng.uniform(0, 1, n_patch) < spec.temporal_change
    sat_rgb = np.where(changed[:, None], _patch_colours(rng, changed_class, jitter), patch_rgb)
    tex_amp = np.array([c[3] for c in GROUND_CLASSES], np.float32)[classes][patch]
    texture = tex_amp * (0.75 * fbm_noise(rng, world_hw, 4.0 / spec.resolution, 3)
                         + 0.45 * value_noise(rng, world_hw, 1.0))
    texture += 10.0 * value_noise(rng, world_hw, 60.0 / spec.resolution)  # moisture / wear drift
    _add_crop_rows(rng, spec, texture, patch, classes)
    texture = texture[..., None]
    return patch_rgb[patch] + texture, sat_rgb[patch] + texture


def _patch_colours(rng: np.random.Generator, classes: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """(n, 3) per-patch colours: class mean, a brightness jitter and a small tint."""
    base = np.array([c[1] for c in GROUND_CLASSES], np.float32)[classes]
    brightness = rng.normal(0, 1, (classes.size, 1)) * jitter[classes][:, None]
    return (base + brightness + rng.normal(0, 4, (classes.size, 3))).astype(np.float32)


def _add_crop_rows(rng: np.random.Generator, spec: WorldSpec, texture: np.ndarray, patch: np.ndarray,
                   classes: np.ndarray) -> None:
    """Crop fields: rows with a per-field orientation and spacing (in place, crop pixels only)."""
    angle = rng.uniform(0, math.pi, classes.size)
    period = rng.uniform(3.0, 7.0, classes.size) / spec.resolution
    rows, cols = np.nonzero(classes[patch] == CROP_CLASS)
    p = patch[rows, cols]
    phase = (cols * np.cos(angle[p]) + rows * np.sin(angle[p])) / period[p]
    texture[rows, cols] += (14.0 * np.sin(2 * math.pi * phase)).astype(np.float32)


def _paint_roads(rng: np.random.Generator, rgbs: tuple[np.ndarray, ...], roads: _RoadRaster,
                 res: float) -> None:
    """Overwrite road, sidewalk and marking pixels of the ground colours (in place)."""
    hw = roads.road.shape
    wear = 8.0 * value_noise(rng, hw, 12.0 / res) + 5.0 * value_noise(rng, hw, 1.0)
    asphalt = (ASPHALT_GREY + roads.tone + wear)[roads.road]
    asphalt_rgb = asphalt[:, None] + np.array([0.0, 0.0, 3.0], np.float32)
    # Sidewalk slabs: joints every 1.5 m in both axes.
    step = max(2, int(round(1.5 / res)))
    joints = ((np.arange(hw[0]) % step) == 0)[:, None] | ((np.arange(hw[1]) % step) == 0)[None, :]
    slab = SIDEWALK_COLOUR[None] + (4.0 * value_noise(rng, hw, 2.0) - 18.0 * joints)[roads.sidewalk][:, None]
    for rgb in rgbs:
        rgb[roads.road] = asphalt_rgb
        rgb[roads.sidewalk] = slab
        rgb[roads.marking] = MARKING_COLOUR


# ------------------------------------------------------------------------------------- buildings


def _pick_facade(rng: np.random.Generator, roof: np.ndarray) -> np.ndarray:
    """A facade colour clearly different from the roof colour."""
    far = np.linalg.norm(FACADE_COLOURS - roof[None], axis=1) >= MIN_ROOF_FACADE_DISTANCE
    choices = np.flatnonzero(far) if far.any() else np.arange(len(FACADE_COLOURS))
    return FACADE_COLOURS[rng.choice(choices)] + rng.normal(0, 6, 3).astype(np.float32)


def _place_buildings(rng: np.random.Generator, spec: WorldSpec, w: World, blocked: np.ndarray,
                     grid_angle: float) -> np.ndarray:
    """Drop oriented rectangular buildings off the roads (most facing a road); paint heights, roofs and
    facades. Returns the footprint mask."""
    res = spec.resolution
    hw = w.shape
    area_ha = hw[0] * hw[1] * res * res / 1e4
    height_field = value_noise(rng, hw, 400.0 / res)  # taller districts where this is high
    footprint = np.zeros(hw, bool)
    table = [np.zeros(7)]
    target = int(spec.buildings_per_ha * area_ha)
    for _ in range(target * 5):  # most failures are collisions; retry until the block is filled
        if len(table) > target:
            break
        hu, hv = rng.uniform(spec.building_size_min_m, spec.building_size_max_m, 2) / 2
        if rng.random() < spec.building_frontage and len(w.road_points):
            cx, cy, theta = _frontage_site(rng, w.road_points, hv)
        else:
            cx, cy = rng.uniform((0, 0), w.size_m)
            theta = grid_angle + rng.normal(0, 0.05) if rng.random() < 0.8 else rng.uniform(0, math.pi)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        reach = math.hypot(hu, hv) + spec.building_setback_m
        win = _window(hw, res, cx - reach, cx + reach, cy - reach, cy + reach)
        if win is None:
            continue
        (rs, cs), xs, ys = win
        u = (xs - cx) * cos_t + (ys - cy) * sin_t
        v = -(xs - cx) * sin_t + (ys - cy) * cos_t
        s = spec.building_setback_m
        halo = (np.abs(u) <= hu + s) & (np.abs(v) <= hv + s)
        if (halo & (blocked[rs, cs] | footprint[rs, cs])).any():
            continue
        inside = (np.abs(u) <= hu) & (np.abs(v) <= hv)
        if not inside.any():
            continue
        bid = len(table)
        height = _building_height(rng, spec, float(height_field[rs, cs].mean()))
        floor_h = float(rng.uniform(2.8, 3.6))
        table.append(np.array([cx, cy, cos_t, sin_t, hu, hv, floor_h]))
        footprint[rs, cs] |= inside
        w.solid_height[rs, cs][inside] = height
        w.building_id[rs, cs][inside] = bid
        roof = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))] + rng.normal(0, 8, 3).astype(np.float32)
        w.side_rgb[rs, cs][inside] = _to_uint8(_pick_facade(rng, roof))
        w.top_rgb[rs, cs][inside] = _roof_pixels(rng, roof, u[inside], v[inside], hu, hv)
    w.buildings = np.array(table)
    return footprint


def _frontage_site(rng: np.random.Generator, road_points: np.ndarray, half_depth: float):
    """(cx, cy, theta) of a building facing a random road: long side along it, behind a front yard."""
    x, y, width, dx, dy = road_points[rng.integers(len(road_points))]
    side = rng.choice([-1.0, 1.0])
    offset = side * (width / 2 + rng.uniform(4.0, 12.0) + half_depth)
    return x - dy * offset, y + dx * offset, math.atan2(dy, dx)


def _building_height(rng: np.random.Generator, spec: WorldSpec, district: float) -> float:
    """Log-uniform height, pushed up in 'downtown' districts (district noise > 0)."""
    lo, hi = math.log(spec.building_height_min_m), math.log(spec.building_height_max_m)
    q = rng.uniform(0, 1) ** (1.6 - 0.8 * min(max(district, -1.0), 1.0))
    return float(math.exp(lo + (hi - lo) * q))


def _roof_pixels(rng: np.random.Generator, roof: np.ndarray, u: np.ndarray, v: np.ndarray,
                 hu: float, hv: float) -> np.ndarray:
    """Roof colour with a ridge (the two halves lit differently), an edge rim and grain."""
    along_u = hu >= hv  # ridge runs along the long side
    across = v if along_u else u
    half = np.where(across >= 0, 1.08, 0.9) if rng.random() < 0.6 else 1.0
    edge = np.minimum(hu - np.abs(u), hv - np.abs(v)) < 0.6
    shade = half * np.where(edge, 0.85, 1.0) + rng.normal(0, 0.03, u.shape)
    return _to_uint8(roof[None] * np.asarray(shade)[..., None])


# ----------------------------------------------------------------------------------------- trees


def _place_trees(rng: np.random.Generator, spec: WorldSpec, w: World, road: np.ndarray,
                 footprint: np.ndarray, ground: np.ndarray) -> None:
    """Trees clustered by a low-frequency density field; trunks off roads and buildings.

    Paints crowns (dome-shaped extent, leafy texture) into ``crown_*``/``top_rgb``, trunks into
    ``solid_height``/``side_rgb``, and a soft shade under each crown into the float ground colour.
    """
    res = spec.resolution
    hw = w.shape
    area_ha = hw[0] * hw[1] * res * res / 1e4
    density = np.clip(0.6 + 0.9 * value_noise(rng, hw, 150.0 / res), 0.0, 2.0)
    n_try = int(spec.trees_per_ha * area_ha * 1.2)
    xs_all, ys_all = rng.uniform(0, w.size_m[0], n_try), rng.uniform(0, w.size_m[1], n_try)
    rows, cols = w.to_pixel(xs_all, ys_all)
    rows = np.clip(rows.round().astype(int), 0, hw[0] - 1)
    cols = np.clip(cols.round().astype(int), 0, hw[1] - 1)
    keep = (rng.uniform(0, 2.0, n_try) < density[rows, cols]) & ~road[rows, cols] & ~footprint[rows, cols]
    street_x, street_y = _street_tree_sites(rng, spec, w, density)
    for tx, ty in zip(np.concatenate([xs_all[keep], street_x]), np.concatenate([ys_all[keep], street_y]),
                      strict=True):
        r, c = w.to_pixel(tx, ty)
        r, c = min(max(int(round(r)), 0), hw[0] - 1), min(max(int(round(c)), 0), hw[1] - 1)
        if not (road[r, c] or footprint[r, c]):
            _draw_tree(rng, spec, w, footprint, ground, float(tx), float(ty))


def _street_tree_sites(rng: np.random.Generator, spec: WorldSpec, w: World,
                       density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trees lining the roads just beyond the kerb (their crowns overhang the road in the top view, while
    the ground camera sees the road under them); leafier streets where the density field is high."""
    pts = w.road_points
    if len(pts) == 0 or spec.street_trees_per_100m <= 0:
        return np.zeros(0), np.zeros(0)
    rows, cols = w.to_pixel(pts[:, 0], pts[:, 1])
    rows = np.clip(rows.astype(int), 0, w.shape[0] - 1)
    local = density[rows, np.clip(cols.astype(int), 0, w.shape[1] - 1)]
    # Road points are 2 m apart; a tree per point with this probability gives the requested spacing.
    pick = rng.uniform(0, 1, len(pts)) < spec.street_trees_per_100m * 2 / 100 * local
    side = rng.choice([-1.0, 1.0], len(pts))
    lateral = side * (pts[:, 2] / 2 + rng.uniform(1.0, 3.5, len(pts)))
    x = pts[:, 0] - pts[:, 4] * lateral
    y = pts[:, 1] + pts[:, 3] * lateral
    return x[pick], y[pick]


def _draw_tree(rng: np.random.Generator, spec: WorldSpec, w: World, footprint: np.ndarray,
               ground: np.ndarray, tx: float, ty: float) -> None:
    """Rasterise one tree: a dome crown floating on a thin trunk."""
    res = spec.resolution
    radius = float(rng.uniform(spec.crown_radius_min_m, spec.crown_radius_max_m))
    top = float(rng.uniform(spec.tree_height_min_m, spec.tree_height_max_m))
    bottom = max(MIN_CROWN_BOTTOM_M, top * float(rng.uniform(0.3, 0.5)))
    top = max(top, bottom + 1.5)
    win = _window(w.shape, res, tx - radius, tx + radius, ty - radius, ty + radius)
    if win is None:
        return
    (rs, cs), xs, ys = win
    r2 = ((xs - tx) ** 2 + (ys - ty) ** 2) / radius**2
    crown = (r2 <= 1.0) & ~footprint[rs, cs]
    depth = top - bottom
    hi = np.where(crown, top - 0.45 * depth * r2, 0.0).astype(np.float32)
    lo = (bottom + 0.35 * depth * r2).astype(np.float32)
    higher = hi > w.crown_high[rs, cs]
    w.crown_low[rs, cs] = np.where(crown & ((w.crown_high[rs, cs] == 0) | (lo < w.crown_low[rs, cs])),
                                   lo, w.crown_low[rs, cs])
    w.crown_high[rs, cs] = np.where(higher, hi, w.crown_high[rs, cs])
    green = np.array([rng.uniform(34, 92), rng.uniform(72, 130), rng.uniform(26, 62)], np.float32)
    leaves = 1.0 + 0.16 * rng.standard_normal(r2.shape) - 0.25 * r2
    colour = _to_uint8(green * leaves[..., None])
    w.top_rgb[rs, cs] = np.where(higher[..., None], colour, w.top_rgb[rs, cs])
    ground[rs, cs] *= np.where(crown, 0.8, 1.0)[..., None].astype(np.float32)
    trunk = r2 * radius**2 <= max(0.3, res / 2) ** 2
    trunk &= ~footprint[rs, cs]
    w.solid_height[rs, cs] = np.where(trunk, bottom + 0.3 * depth, w.solid_height[rs, cs])
    w.side_rgb[rs, cs] = np.where(trunk[..., None], TRUNK_COLOUR.astype(np.uint8),
                                  w.side_rgb[rs, cs])


# ------------------------------------------------------------------------------------------ world


def build_world(rng: np.random.Generator, spec: WorldSpec, size_m: tuple[float, float]) -> World:
    """Generate a world covering ``size_m`` = (east-west, north-south) metres."""
    res = spec.resolution
    hw = (int(round(size_m[1] / res)), int(round(size_m[0] / res)))
    roads = _grid_roads(rng, spec, size_m) + _curved_roads(rng, spec, size_m)
    raster = _draw_roads(roads, hw, res)
    ground, sat_ground = _natural_ground(rng, spec, hw)
    _paint_roads(rng, (ground, sat_ground), raster, res)
    w = World(
        resolution=res,
        ground_rgb=np.zeros(hw + (3,), np.uint8),
        top_rgb=np.zeros(hw + (3,), np.uint8),
        solid_height=np.zeros(hw, np.float32),
        crown_low=np.zeros(hw, np.float32),
        crown_high=np.zeros(hw, np.float32),
        side_rgb=np.zeros(hw + (3,), np.uint8),
        building_id=np.zeros(hw, np.int32),
        buildings=np.zeros((1, 7)),
        road_points=raster.points,
    )
    w.top_rgb[:] = np.clip(sat_ground, 0, 255).astype(np.uint8)  # roofs and crowns are painted over this
    del sat_ground
    blocked = raster.road | raster.sidewalk
    footprint = _place_buildings(rng, spec, w, blocked, grid_angle=0.0)
    _place_trees(rng, spec, w, raster.road, footprint, ground)
    w.ground_rgb[:] = np.clip(np.rint(ground), 0, 255).astype(np.uint8)
    return w


def flat_world(ground_rgb: np.ndarray, resolution: float) -> World:
    """A world with only a ground surface (no buildings, trees or roads): the projection test case."""
    hw = ground_rgb.shape[:2]
    return World(
        resolution=resolution,
        ground_rgb=ground_rgb,
        top_rgb=ground_rgb,
        solid_height=np.zeros(hw, np.float32),
        crown_low=np.zeros(hw, np.float32),
        crown_high=np.zeros(hw, np.float32),
        side_rgb=np.zeros(hw + (3,), np.uint8),
        building_id=np.zeros(hw, np.int32),
        buildings=np.zeros((1, 7)),
        road_points=np.zeros((0, 5)),
    )
