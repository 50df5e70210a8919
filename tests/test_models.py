"""The satellite input crop (`model.satellite_crop`): the same pixels the mask lets through, less compute."""

from __future__ import annotations

import pytest
import torch

from cvgl.models import CrossViewModel, centre_disc, mask_box

MODEL = {"backbone": "convnext_atto", "head": "gem", "dim": 16, "ground_size": [32, 128],
         "satellite_size": [64, 64], "satellite_mask_radius": 0.5}


def test_mask_box_is_the_smallest_box_around_the_disc() -> None:
    mask = centre_disc((64, 64), 0.5)
    rows, cols = mask_box(mask)
    assert (rows, cols) == (slice(16, 48), slice(16, 48))
    assert mask[rows, cols].sum() == mask.sum()  # nothing the disc lets through is cut
    uneven = torch.zeros(10, 12)
    uneven[2, 3] = uneven[6, 8] = 1
    assert mask_box(uneven) == (slice(2, 7), slice(3, 9))


def test_cropped_satellite_encoder_sees_exactly_the_disc() -> None:
    torch.manual_seed(0)
    model = CrossViewModel({**MODEL, "satellite_crop": True}).eval()
    tiles = torch.rand(3, 3, 64, 64)
    outside = tiles * (1 - centre_disc((64, 64), 0.5))  # every pixel the mask hides
    with torch.no_grad():
        emb = model.encode(tiles, "satellite")
        same = model.encode(tiles - outside + torch.rand_like(tiles) * (outside > 0), "satellite")
        direct = model.satellite(tiles[..., 16:48, 16:48] * centre_disc((64, 64), 0.5)[16:48, 16:48])
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb, same)  # pixels outside the disc do not matter
    torch.testing.assert_close(emb, direct)  # the encoder runs on the 32 x 32 crop


def test_crop_without_a_mask_or_an_empty_disc_is_an_error_naming_the_key() -> None:
    with pytest.raises(ValueError, match="model.satellite_crop needs model.satellite_mask_radius"):
        CrossViewModel({**MODEL, "satellite_mask_radius": None, "satellite_crop": True})
    with pytest.raises(ValueError, match="model.satellite_mask_radius 0.01: the disc holds no pixel"):
        CrossViewModel({**MODEL, "satellite_mask_radius": 0.01})
    with pytest.raises(ValueError, match="a 16x16 input is too small"):  # a 32 px tile cropped to its disc
        CrossViewModel({**MODEL, "satellite_size": [32, 32], "satellite_crop": True})
