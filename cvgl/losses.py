"""Symmetric InfoNCE with label smoothing, and the "unlabeled-as-negative" variant (docs/method.md §3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(ground: torch.Tensor, satellite: torch.Tensor, logit_scale: torch.Tensor,
             smoothing: float = 0.1, labeled: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of aligned pairs.

    With `labeled` (bool, one per pair) a constant zero logit is appended to every row of both directions;
    a labeled row targets its partner, an unlabeled row targets the zero column, so unlabeled images only
    serve as negatives. Label smoothing spreads over n (or n+1) classes, as torch's cross-entropy does.
    """
    q, k = F.normalize(ground, dim=-1), F.normalize(satellite, dim=-1)
    logits = logit_scale.exp() * q @ k.t()
    n = logits.shape[0]
    target = torch.arange(n, device=logits.device)
    rows, cols = logits, logits.t()
    if labeled is not None:
        zero = logits.new_zeros(n, 1)
        rows, cols = torch.cat([rows, zero], 1), torch.cat([cols, zero], 1)
        target = torch.where(labeled.to(logits.device), target, torch.full_like(target, n))
    return 0.5 * (F.cross_entropy(rows, target, label_smoothing=smoothing)
                  + F.cross_entropy(cols, target, label_smoothing=smoothing))
