"""Where the cameras stand: a world big enough for N locations, and N road positions a minimum spacing apart.

Coordinates are world-local metres (x east, y north, origin at the world's south-west corner, see
:mod:`cvgl.synth.world`); each layout writer turns them into its own global frame and made-up lat/lon.
"""

from __future__ import annotations

import math

import numpy as np

from cvgl.synth.config import SynthConfig
from cvgl.synth.world import World, build_world

#: Metres per degree of latitude of the made-up lat/lon the layouts write (equirectangular around an anchor).
METRES_PER_DEG_LAT = 111_320.0


def _world_size_m(cfg: SynthConfig, n_locations: int, grow: float,
                  border: float | None = None) -> tuple[float, float]:
    """Square world holding ``n_locations``: road density ~ 2/block, one location per ~1.9 spacings of road
    (measured: greedy spacing also rejects points across crossings), plus a border (default
    :func:`border_m`) so tiles and the panorama's near field stay inside the world."""
    block = (cfg.block_min_m + cfg.block_max_m) / 2
    area_per_location = 1.9 * cfg.min_spacing_m * block / 2 / (1 - cfg.road_drop_prob / 2)
    border = border_m(cfg) if border is None else border
    side = math.sqrt(n_locations * area_per_location) * grow + 2 * border
    return side, side


def border_m(cfg: SynthConfig) -> float:
    """Margin between sampled locations and the world edge (a tile plus some view distance)."""
    return cfg.tile_half_extent_m + 60.0


def sample_locations(rng: np.random.Generator, world: World, n: int, min_spacing: float,
                     border: float) -> np.ndarray | None:
    """(n, 2) camera positions on roads, pairwise >= min_spacing apart; None if the world is too small.

    Candidates are road centreline samples in random order, accepted greedily; the camera is moved
    sideways into a lane (up to a quarter of the road width), as a car would be.
    """
    pts = world.road_points
    width_m, height_m = world.size_m
    inside = ((pts[:, 0] > border) & (pts[:, 0] < width_m - border)
              & (pts[:, 1] > border) & (pts[:, 1] < height_m - border))
    pts = pts[inside][rng.permutation(int(inside.sum()))]
    cell = min_spacing
    grid: dict[tuple[int, int], list[np.ndarray]] = {}
    chosen = []
    for x, y, width, dx, dy in pts:
        lateral = rng.uniform(-width / 4, width / 4)
        p = np.array([x - dy * lateral, y + dx * lateral])
        gx, gy = int(p[0] // cell), int(p[1] // cell)
        near = (q for i in (-1, 0, 1) for j in (-1, 0, 1) for q in grid.get((gx + i, gy + j), []))
        if any(np.hypot(*(p - q)) < min_spacing for q in near):
            continue
        grid.setdefault((gx, gy), []).append(p)
        chosen.append(p)
        if len(chosen) == n:
            return np.array(chosen)
    return None


def world_with_locations(cfg: SynthConfig, seed: int, n: int,
                          border: float | None = None) -> tuple[World, np.ndarray]:
    """Generate a world big enough for ``n`` locations (grown by 25 % per retry) and sample them at least
    ``border`` metres (default :func:`border_m`) inside its edge."""
    border = border_m(cfg) if border is None else border
    grow = 1.0
    for _ in range(8):
        rng = np.random.default_rng(seed)
        world = build_world(rng, cfg.world_spec(), _world_size_m(cfg, n, grow, border))
        locations = sample_locations(rng, world, n, cfg.min_spacing_m, border)
        if locations is not None:
            return world, locations
        grow *= 1.25
    raise RuntimeError(f"could not place {n} locations with synth.min_spacing_m={cfg.min_spacing_m}")
