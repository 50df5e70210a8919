"""The BEV projection of docs/method.md §2.1-2.2: constants, conventions, and that a flat world's projection is
its satellite tile."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from cvgl.geometry import (
    bev_focal_length,
    bev_ground_offsets_m,
    bev_half_extent_m,
    bev_sampling_grid,
    bev_valid_mask,
    cvusa_band_rows,
    ground_distance_per_pixel,
    pano_column_azimuth,
    pano_row_depression,
    project_to_bev,
    to_uint8,
)
from cvgl.synth.render import RenderSpec, ground_pyramid, render_panorama, render_tile
from cvgl.synth.world import flat_world, value_noise

PANO_W, TILE = 512, 128
PANO_HW = (93, PANO_W)


def test_focal_lengths_match_the_method():
    assert bev_focal_length(750, 175.0) == pytest.approx(16.37, abs=0.005)
    assert bev_focal_length(1200, 170.0) == pytest.approx(52.49, abs=0.005)


def test_cvusa_band_sits_at_row_176_of_the_completed_panorama():
    assert cvusa_band_rows(1232, 224) == (176.0, 399.0)
    # Scaled bands keep their angular placement: the same depression at the band's first and last row.
    top, bottom = pano_row_depression(np.array([0.0, 92.0]), PANO_HW, band=True)
    ref_top, ref_bottom = pano_row_depression(np.array([0.0, 223.0]), (224, 1232), band=True)
    assert math.degrees(top) == pytest.approx(math.degrees(ref_top), abs=0.3)
    assert math.degrees(bottom) == pytest.approx(math.degrees(ref_bottom), abs=0.3)


def test_cvusa_bev_has_a_black_disc_of_about_32_px():
    mask = bev_valid_mask((224, 1232), 750, 175.0, band=True)
    row = mask[375, 375:]
    assert not row[:30].any() and row[34:].all()
    assert bev_valid_mask((832, 1664), 1200, 170.0, band=False).all()


def test_metric_extent():
    assert bev_half_extent_m(2.0, 175.0) == pytest.approx(45.81, abs=0.01)
    metres = ground_distance_per_pixel(TILE, 175.0, 2.0)
    assert metres * TILE / 2 == pytest.approx(bev_half_extent_m(2.0, 175.0))
    east, north = bev_ground_offsets_m(TILE, 175.0, 2.0)
    assert east[0, TILE // 2] == 0 and north[TILE // 2, 0] == 0
    assert east[0, -1] > 0 and north[0, 0] > 0  # right = east, up = north


def test_to_uint8_rounds_and_clips():
    out = to_uint8(torch.tensor([2.4, 2.6, -3.0, 300.0]))
    assert out.tolist() == [2, 3, 0, 255] and out.dtype == np.uint8


def test_grid_is_cached():
    a = bev_sampling_grid(PANO_HW, TILE, 175.0, True)
    assert bev_sampling_grid(PANO_HW, TILE, 175.0, True) is a
    assert a.shape == (1, TILE, TILE, 2)


def test_batch_projection_equals_per_image_projection():
    panos = torch.rand(3, 3, *PANO_HW) * 255
    batch = project_to_bev(panos, 64, 175.0, band=True)
    single = torch.cat([project_to_bev(p[None], 64, 175.0, band=True) for p in panos])
    assert torch.allclose(batch, single)


def _sector_pano(columns: list[tuple[int, int]]) -> torch.Tensor:
    """A panorama that is red only in the given column ranges."""
    pano = torch.zeros(1, 3, *PANO_HW)
    for start, stop in columns:
        pano[0, 0, :, start:stop] = 255.0
    return pano


@pytest.mark.parametrize("columns, where", [([(246, 266)], "top"), ([(374, 394)], "right"),
                                            ([(118, 138)], "left"), ([(0, 10), (502, 512)], "bottom")])
def test_panorama_directions_map_to_bev_sides(columns, where):
    """Centre column = north = BEV top, 3W/4 = east = BEV right, W/4 = west = left, columns 0/W = south."""
    bev = project_to_bev(_sector_pano(columns), TILE, 175.0, band=True)[0, 0]
    c, off = TILE // 2, 40
    probe = {"top": bev[c - off, c], "right": bev[c, c + off],
             "left": bev[c, c - off], "bottom": bev[c + off, c]}
    assert probe[where] > 200
    assert sum(float(v) > 200 for v in probe.values()) == 1


def _raw_spec(**changes) -> RenderSpec:
    """Renders without any sensor style, compass error or GPS offset: pure geometry."""
    return dataclasses.replace(RenderSpec(tile_size=TILE, pano_width=PANO_W, pano_height=PANO_HW[0],
                                          styled=False), **changes)


def _smooth_ground(size_px: int, seed: int) -> np.ndarray:
    """Colourful ground with metre-scale features (flat world: no roads, buildings or trees)."""
    rng = np.random.default_rng(seed)
    channels = [128 + 45 * value_noise(rng, (size_px, size_px), 24) for _ in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def flat():
    world = flat_world(_smooth_ground(800, seed=3), resolution=0.5)
    return world, ground_pyramid(world)


def test_projection_of_a_flat_world_equals_its_tile(flat):
    world, mip = flat
    spec = _raw_spec()
    rng = np.random.default_rng(0)
    x = y = 200.0
    pano = render_panorama(world, mip, x, y, spec, rng)
    bev = project_to_bev(torch.from_numpy(pano).permute(2, 0, 1)[None].float(), TILE, 175.0, band=True)
    bev = bev[0].permute(1, 2, 0).numpy()
    valid = bev_valid_mask(PANO_HW, TILE, 175.0, band=True)
    idx = np.arange(TILE) - TILE / 2
    rho = np.hypot(idx[:, None], idx[None, :])
    # Drop a thin border: the innermost valid ring blends with the zero rows outside the band.
    valid &= rho > 8
    error = np.abs(bev - render_tile(world, x, y, spec, rng)).mean(-1)
    error_other = np.abs(bev - render_tile(world, x + 60.0, y - 40.0, spec, rng)).mean(-1)
    # Within 32 px (22 m) a 93-row band still resolves the ground to about a BEV pixel: equal up to
    # interpolation. Further out a panorama row spans metres of ground, so the BEV is a blurred tile.
    near = valid & (rho < 32)
    assert error[near].mean() < 1.0, error[near].mean()
    assert error_other[near].mean() > 30 * error[near].mean()
    assert error[valid].mean() < 15.0 and error_other[valid].mean() > 4 * error[valid].mean()


def test_rendered_red_patch_north_appears_at_bev_top(flat):
    """End to end through the renderer: a red square 20 m north and a blue one 20 m east of the camera."""
    world, _ = flat
    ground = np.full_like(world.ground_rgb, 120)
    ground[300:340, 380:420] = (255, 0, 0)  # north of (200 m, 200 m): rows above row 400
    ground[380:420, 460:500] = (0, 0, 255)  # east: columns right of column 400
    red_world = flat_world(ground, 0.5)
    rng = np.random.default_rng(0)
    pano = render_panorama(red_world, ground_pyramid(red_world), 200.0, 200.0, _raw_spec(), rng)
    bev = project_to_bev(torch.from_numpy(pano).permute(2, 0, 1)[None].float(), TILE, 175.0, True)[0]
    red = (bev[0] > 200) & (bev[2] < 80)
    blue = (bev[2] > 200) & (bev[0] < 80)
    rows, cols = np.nonzero(red.numpy())
    assert rows.mean() < TILE / 2 - 10 and abs(cols.mean() - TILE / 2) < 4
    rows, cols = np.nonzero(blue.numpy())
    assert cols.mean() > TILE / 2 + 10 and abs(rows.mean() - TILE / 2) < 4


def test_pano_azimuth_convention():
    az = np.degrees(pano_column_azimuth(np.array([0, (PANO_W - 1) / 2, 3 * (PANO_W - 1) / 4]), PANO_W))
    assert az.tolist() == pytest.approx([-180.0, 0.0, 90.0])
