"""InfoNCE and its unlabeled-as-negative variant against hand computations (docs/method.md §3.2)."""

from __future__ import annotations

import math

import pytest
import torch

from cvgl.losses import info_nce


def _ce(logits: list[float], target: int, eps: float) -> float:
    """Cross-entropy with label smoothing, written out: -sum_j q_j log softmax_j."""
    z = math.log(sum(math.exp(v) for v in logits))
    n = len(logits)
    return -sum(((1 - eps) * (j == target) + eps / n) * (v - z) for j, v in enumerate(logits))


def test_symmetric_info_nce_matches_hand_computation() -> None:
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    scale = torch.tensor(math.log(10.0))  # logit scale e^t = 10
    # similarities: g0.s0 = .8, g0.s1 = 0, g1.s0 = .96, g1.s1 = .8
    rows = [[8.0, 0.0], [9.6, 8.0]]
    cols = [[8.0, 9.6], [0.0, 8.0]]
    for eps in (0.0, 0.1):
        expected = 0.5 * (sum(_ce(r, i, eps) for i, r in enumerate(rows)) / 2
                          + sum(_ce(c, i, eps) for i, c in enumerate(cols)) / 2)
        assert float(info_nce(g, s, scale, eps)) == pytest.approx(expected, rel=1e-6)


def test_unlabeled_rows_target_the_zero_column() -> None:
    g = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    scale = torch.tensor(math.log(10.0))
    labeled = torch.tensor([True, False])
    eps = 0.1
    rows = [[8.0, 0.0, 0.0], [9.6, 8.0, 0.0]]
    cols = [[8.0, 9.6, 0.0], [0.0, 8.0, 0.0]]
    targets = [0, 2]  # the unlabeled pair's target is the appended zero logit
    expected = 0.5 * (sum(_ce(r, t, eps) for r, t in zip(rows, targets, strict=True)) / 2
                      + sum(_ce(c, t, eps) for c, t in zip(cols, targets, strict=True)) / 2)
    assert float(info_nce(g, s, scale, eps, labeled)) == pytest.approx(expected, rel=1e-6)


def test_all_labeled_mask_differs_from_plain_only_by_the_zero_column() -> None:
    torch.manual_seed(0)
    g, s = torch.randn(6, 4), torch.randn(6, 4)
    scale = torch.tensor(2.0)
    masked = info_nce(g, s, scale, 0.0, torch.ones(6, dtype=torch.bool))
    plain = info_nce(g, s, scale, 0.0)
    assert float(masked) > float(plain)  # the extra class only adds probability mass to the normaliser


def test_loss_is_differentiable_in_the_temperature() -> None:
    g, s = torch.randn(4, 3), torch.randn(4, 3)
    scale = torch.tensor(1.0, requires_grad=True)
    info_nce(g, s, scale, 0.1, torch.tensor([True, False, True, False])).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
