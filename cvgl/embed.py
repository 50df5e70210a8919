"""Embedding images with a trained encoder, in batches, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from cvgl.augment import to_tensor
from cvgl.io import Progress
from cvgl.models import CrossViewModel, autocast


@torch.no_grad()
def embed_images(model: CrossViewModel, images: np.ndarray, view: str, batch_size: int,
                 device: torch.device, label: str = "embed", dtype: torch.dtype | None = None) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,d) float32 L2-normalised embeddings with the `view` encoder (eval mode).

    `dtype` (e.g. torch.bfloat16): the backbone runs under autocast; the neck and normalisation stay fp32.
    """
    model.eval()
    out: list[np.ndarray] = []
    progress = Progress(len(images), label, step=0.25)
    for i in range(0, len(images), batch_size):
        chunk = to_tensor(images[i:i + batch_size], device)
        with autocast(chunk.device, dtype):
            emb = model.encode(chunk, view)
        out.append(emb.float().cpu().numpy())
        progress.update(len(chunk))
    dim = model.ground.dim
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
