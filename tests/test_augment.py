"""Joint augmentations keep a panorama and its tile geometrically consistent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cvgl.augment import RowDraws, colour_jitter, joint_flip_rotate, photometric, random_affine
from cvgl.distributed import shard
from cvgl.geometry import bev_valid_mask, project_to_bev


def smooth_panorama(seed: int) -> torch.Tensor:
    """A smooth random panorama (pixel noise would make sub-pixel resampling differences dominate)."""
    coarse = torch.rand(1, 3, 8, 33, generator=torch.Generator().manual_seed(seed))
    pano = F.interpolate(coarse, size=(64, 264), mode="bicubic", align_corners=True)[..., :256]
    return pano.clamp(0, 1)


def away_from_centre(size: int, radius: float) -> torch.Tensor:
    """Pixels farther than `radius` from the BEV centre: near it one pixel spans many azimuths, and the
    method's centre (S/2) sits half a pixel off the array's rotation centre ((S-1)/2)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((ys - (size - 1) / 2) ** 2 + (xs - (size - 1) / 2) ** 2).sqrt() > radius


def test_panorama_roll_equals_tile_rotation_through_the_projection() -> None:
    """Rolling the panorama left by r*W/4 is the same scene as rotating its BEV by r*90 deg counter-clockwise."""
    pano = smooth_panorama(0)
    tile = project_to_bev(pano, 64, 170.0, band=False)
    mask = torch.from_numpy(bev_valid_mask((64, 256), 64, 170.0, band=False))
    seen = set()
    for seed in range(8):
        g, s = joint_flip_rotate(pano, tile, torch.Generator().manual_seed(seed), flip_p=0.0, rotate_p=1.0)
        gen = torch.Generator().manual_seed(seed)
        torch.rand(1, generator=gen)  # replay the draws to learn which r was chosen
        torch.rand(1, generator=gen)
        r_drawn = int(torch.randint(1, 4, (1,), generator=gen))
        seen.add(r_drawn)
        expected_pano = torch.roll(pano, shifts=-r_drawn * 64, dims=-1)
        assert torch.equal(g, expected_pano)
        reprojected = project_to_bev(g, 64, 170.0, band=False)
        inner = mask & away_from_centre(64, 12)
        errors = {k: float((reprojected - torch.rot90(tile, k, dims=(-2, -1))).abs()[..., inner].mean())
                  for k in range(4)}
        # The method puts the BEV centre at S/2, half a pixel off the array's rotation centre, so the match
        # is not exact; it must still be far closer than every other rotation.
        others = min(v for k, v in errors.items() if k != r_drawn)
        assert errors[r_drawn] < 0.3 * others, (r_drawn, errors)
    assert seen == {1, 2, 3}


def test_joint_flip_mirrors_both_views_consistently() -> None:
    pano = smooth_panorama(1)
    tile = project_to_bev(pano, 64, 170.0, band=False)
    g, s = joint_flip_rotate(pano, tile, torch.Generator().manual_seed(0), flip_p=1.0, rotate_p=0.0)
    assert torch.equal(s, tile.flip(-1)) and torch.equal(g, pano.flip(-1))
    # Mirroring the panorama's columns moves the centre column by one pixel: undo that, then compare with the
    # unflipped alternative, which must be far worse.
    reprojected = project_to_bev(torch.roll(g, shifts=1, dims=-1), 64, 170.0, band=False)
    mask = torch.from_numpy(bev_valid_mask((64, 256), 64, 170.0, band=False)) & away_from_centre(64, 12)
    flipped_err = (reprojected - s).abs()[..., mask].mean()
    unflipped_err = (reprojected - tile).abs()[..., mask].mean()
    assert flipped_err < 0.3 * unflipped_err


def test_colour_jitter_is_seeded_and_stays_in_range() -> None:
    x = torch.rand(8, 3, 16, 16)
    a = colour_jitter(x, torch.Generator().manual_seed(3))
    b = colour_jitter(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_a_share_of_a_batch_gets_exactly_its_rows_of_the_whole_batch_augmentation() -> None:
    """A torchrun rank augments only its rows (`RowDraws`); each must equal the single-process result's rows,
    for every augmentation the stages draw (flip/turn, dropout, jitter, blur, affine), with uneven shares."""
    gen = torch.Generator().manual_seed(0)
    ground, tile = torch.rand(7, 3, 16, 64, generator=gen), torch.rand(7, 3, 16, 16, generator=gen)
    cfg = {"cutout_p": 0.5, "jitter": 0.4, "jitter_p": 0.8, "gray_p": 0.2, "blur_p": 0.5}

    def augment_all(g: torch.Tensor, s: torch.Tensor, draws: torch.Generator | RowDraws
                    ) -> tuple[torch.Tensor, ...]:
        g, s = joint_flip_rotate(g, s, draws, flip_p=0.5, rotate_p=0.5)
        return photometric(g, draws, cfg), photometric(s, draws, cfg), random_affine(s, draws, 0.2, 0.2, 15)

    whole = augment_all(ground, tile, torch.Generator().manual_seed(5))
    assert not torch.equal(whole[0], ground)
    for world in (2, 3):
        for r in range(world):
            mine = shard(7, world, r)
            part = augment_all(ground[mine], tile[mine], RowDraws(torch.Generator().manual_seed(5), 7, mine))
            for got, want in zip(part, whole, strict=True):
                torch.testing.assert_close(got, want[mine], rtol=0, atol=1e-6)
