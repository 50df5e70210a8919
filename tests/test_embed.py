"""Embeddings averaged over the joint symmetries: what the pseudo labels of `labels.symmetries` rest on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvgl.augment import JOINT_SYMMETRIES, joint_flip_rotate, to_tensor, view_symmetry
from cvgl.embed import embed_images
from cvgl.models import CrossViewModel

MODEL = {"backbone": "convnext_atto", "head": "gem", "dim": 16, "ground_size": [32, 128],
         "satellite_size": [32, 32], "satellite_mask_radius": 0.5}


@pytest.fixture(scope="module")
def model() -> CrossViewModel:
    torch.manual_seed(0)
    return CrossViewModel(MODEL).eval()


def random_images(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_symmetric_embeddings_give_the_mean_similarity_over_jointly_transformed_pairs(model: CrossViewModel,
                                                                                     k: int) -> None:
    ground, sats = random_images(5, (32, 128), 0), random_images(7, (32, 32), 1)
    g = embed_images(model, ground, "ground", 4, torch.device("cpu"), symmetries=k)
    s = embed_images(model, sats, "satellite", 3, torch.device("cpu"), symmetries=k)
    assert g.shape == (5, 16 * k) and s.shape == (7, 16 * k)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0, atol=1e-5)
    # By hand: encode each jointly transformed pair and average the cosine similarities.
    gt, st = to_tensor(ground, "cpu"), to_tensor(sats, "cpu")
    with torch.no_grad():
        sims = [model.encode(view_symmetry(gt, "ground", f, r), "ground")
                @ model.encode(view_symmetry(st, "satellite", f, r), "satellite").T
                for f, r in JOINT_SYMMETRIES[k]]
    np.testing.assert_allclose(g @ s.T, torch.stack(sims).mean(0).numpy(), atol=1e-5)


def test_one_symmetry_is_the_plain_embedding(model: CrossViewModel) -> None:
    images = random_images(3, (32, 32), 2)
    with torch.no_grad():
        plain = model.encode(to_tensor(images, "cpu"), "satellite").numpy()
    np.testing.assert_allclose(embed_images(model, images, "satellite", 8, torch.device("cpu")), plain, atol=1e-6)
    with pytest.raises(ValueError, match="symmetries"):
        embed_images(model, images, "satellite", 8, torch.device("cpu"), symmetries=3)


def test_view_symmetries_are_the_joint_transforms_of_training() -> None:
    """Each (flip, r) applied per view equals what `joint_flip_rotate` does to a pair when it draws (flip, r)."""
    pano, tile = torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 8)
    for seed in range(40):
        g, s = joint_flip_rotate(pano, tile, torch.Generator().manual_seed(seed), flip_p=0.5, rotate_p=0.5)
        matches = [(f, r) for f, r in JOINT_SYMMETRIES[8]
                   if torch.equal(g, view_symmetry(pano, "ground", f, r))
                   and torch.equal(s, view_symmetry(tile, "satellite", f, r))]
        assert len(matches) == 1, seed
