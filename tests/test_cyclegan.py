"""The CycleGAN translator: its parts behave as the paper's, training is unpaired, resumable and deterministic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cvgl.translate import make_translator
from cvgl.translate.cyclegan import (
    CycleGAN,
    CycleGANConfig,
    ImagePool,
    lr_factor,
    patch_discriminator,
    resnet_generator,
    train_cyclegan,
    train_step,
    unpaired_epoch,
)

TINY = CycleGANConfig(size=16, ngf=4, ndf=4, blocks=1, disc_layers=2, epochs=1, epochs_decay=1, batch_size=2,
                      pool_size=3, threads=1, device="cpu")


def sets(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 120, (n, 16, 16, 3), dtype=np.uint8)  # dark "projections"
    b = rng.integers(120, 256, (n + 2, 16, 16, 3), dtype=np.uint8)  # bright "tiles", a different count
    return a, b


def test_generator_keeps_the_size_and_the_patch_discriminator_scores_a_grid() -> None:
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = resnet_generator(8, 2)(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    scores = patch_discriminator(8, 3)(x)
    assert scores.shape[:2] == (2, 1) and scores.shape[2] > 1 and scores.shape[3] > 1  # one score per patch


def test_linear_decay_schedule_matches_the_official_policy() -> None:
    cfg = CycleGANConfig(epochs=100, epochs_decay=100)
    assert lr_factor(0, cfg) == 1.0 and lr_factor(99, cfg) == 1.0
    assert lr_factor(100, cfg) == pytest.approx(1 - 1 / 101) and lr_factor(199, cfg) == pytest.approx(1 / 101)


def test_image_pool_returns_new_images_until_full_then_mixes_history() -> None:
    pool, gen = ImagePool(2), torch.Generator().manual_seed(0)
    first = torch.arange(2.0).view(2, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)
    later = torch.full((20, 1, 1, 1), 9.0)
    out = pool.query(later, gen)
    assert (out == 9).any() and (out < 9).any()  # some new images, some from history
    fresh = later.clone().requires_grad_(True)
    passed = ImagePool(0).query(fresh, gen)  # no history: the fresh fakes, cut from the generators' graph
    assert torch.equal(passed, fresh) and not passed.requires_grad


def test_training_resumes_bit_identically_and_translation_blanks_the_unseen(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    a, b = sets()
    whole = train_cyclegan(a, b, TINY, tmp_path / "whole.pt")
    # Interrupted after epoch 1: the state file of a one-epoch run, then the full run picks it up.
    train_cyclegan(a, b, replace(TINY, epochs_decay=0), tmp_path / "part.pt")
    state = torch.load(tmp_path / "part.pt.state", weights_only=False)
    # Written by a job with another thread count (resuming ignores it: it changes speed, not the model).
    state["config"] = {**state["config"], "epochs_decay": 1, "threads": TINY.threads + 1}
    torch.save(state, tmp_path / "part.pt.state")
    capsys.readouterr()
    resumed = train_cyclegan(a, b, TINY, tmp_path / "part.pt")
    assert "resuming after epoch 1" in capsys.readouterr().err  # not retrained from scratch
    for (k, v), w in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(v, w), k

    translator = make_translator("cyclegan", {**{k: getattr(TINY, k) for k in ("size", "ngf", "ndf", "blocks",
                                 "disc_layers", "epochs", "epochs_decay", "batch_size", "pool_size")},
                                 "threads": 1, "device": "cpu"}, tmp_path / "t.pt")
    translator.update(projections=np.repeat(np.repeat(a, 2, 1), 2, 2))  # any input size: resized to `size`
    translator.update(satellites=b)
    translator.finish()
    valid = np.ones((32, 32), bool)
    valid[:8] = False
    out = translator.translate(np.repeat(np.repeat(a, 2, 1), 2, 2), valid)
    assert out.shape == (6, 16, 16, 3) and out.dtype == np.uint8
    assert (out[:, :4] == 0).all() and out[:, 4:].any()
    again = make_translator("cyclegan", {"size": 16})
    again.load_state_dict(translator.state_dict())
    assert np.array_equal(again.translate(np.repeat(np.repeat(a, 2, 1), 2, 2), valid), out)


def test_unknown_option_names_the_key() -> None:
    with pytest.raises(ValueError, match="translate.cyclegan: unknown key"):
        make_translator("cyclegan", {"sise": 64})
    with pytest.raises(ValueError, match="translate.cyclegan.size"):
        make_translator("cyclegan", {"size": 30})


def test_losses_of_one_step_match_a_hand_computation() -> None:
    """Identity generators and constant discriminators: cycle and identity losses vanish, LSGAN terms are known."""
    cfg = replace(TINY, lambda_cycle=10.0, lambda_identity=0.5)
    model = CycleGAN(cfg)
    c = 0.3
    for g in ("g_a", "g_b"):
        conv = nn.Conv2d(3, 3, 1)
        nn.init.zeros_(conv.bias)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        setattr(model, g, conv)
    for d in ("d_a", "d_b"):
        conv = nn.Conv2d(3, 1, 1)
        nn.init.zeros_(conv.weight)
        nn.init.constant_(conv.bias, c)
        setattr(model, d, conv)
    opt_g = torch.optim.Adam([*model.g_a.parameters(), *model.g_b.parameters()], lr=0.0)
    opt_d = torch.optim.Adam([*model.d_a.parameters(), *model.d_b.parameters()], lr=0.0)
    a, b = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    losses = train_step(model, a, b, opt_g, opt_d, (ImagePool(0), ImagePool(0)), cfg, torch.Generator())
    assert losses["cycle"] == pytest.approx(0.0, abs=1e-6) and losses["identity"] == pytest.approx(0.0, abs=1e-6)
    assert losses["gan"] == pytest.approx(2 * (c - 1) ** 2)  # both generators' fakes scored c against target 1
    assert losses["disc"] == pytest.approx(2 * 0.5 * ((c - 1) ** 2 + c**2))  # real -> 1, fake -> 0, per D


def test_each_epoch_walks_every_projection_once_and_draws_tiles_independently() -> None:
    met: dict[int, set[int]] = {i: set() for i in range(20)}
    for epoch in range(10):
        order_a, draw_b = unpaired_epoch(20, 30, torch.Generator().manual_seed(epoch))
        assert sorted(order_a) == list(range(20)) and draw_b.min() >= 0 and draw_b.max() < 30
        for i, j in zip(order_a, draw_b, strict=True):
            met[int(i)].add(int(j))
    # No projection keeps a partner: over ten epochs each meets several different tiles.
    assert min(len(v) for v in met.values()) >= 5
