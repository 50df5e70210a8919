"""Embedding images with a trained encoder, in batches, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from cvgl.augment import JOINT_SYMMETRIES, to_tensor, view_symmetry
from cvgl.io import Progress
from cvgl.models import CrossViewModel, autocast


@torch.no_grad()
def embed_images(model: CrossViewModel, images: np.ndarray, view: str, batch_size: int,
                 device: torch.device, label: str = "embed", dtype: torch.dtype | None = None,
                 symmetries: int = 1) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,k*d) float32 L2-normalised embeddings with the `view` encoder (eval mode).

    `dtype` (e.g. torch.bfloat16): the backbone runs under autocast; the neck and normalisation stay fp32.
    `symmetries` k in {1, 2, 4, 8}: the embeddings of the image under the first k joint symmetries
    (`cvgl.augment.JOINT_SYMMETRIES`), concatenated and scaled by 1/sqrt(k), so the inner product of a ground
    and a satellite row is their similarity averaged over the k jointly transformed pairs (test-time
    augmentation that keeps pairs aligned; k times the compute and the storage).
    """
    if symmetries not in JOINT_SYMMETRIES:
        raise ValueError(f"symmetries must be one of {sorted(JOINT_SYMMETRIES)}, got {symmetries}")
    model.eval()
    out: list[np.ndarray] = []
    progress = Progress(len(images), label, step=0.25)
    for i in range(0, len(images), batch_size):
        chunk = to_tensor(images[i:i + batch_size], device)
        parts = []
        for flip, turns in JOINT_SYMMETRIES[symmetries]:
            with autocast(chunk.device, dtype):
                parts.append(model.encode(view_symmetry(chunk, view, flip, turns), view).float())
        out.append((torch.cat(parts, dim=1) / len(parts) ** 0.5).cpu().numpy())
        progress.update(len(chunk))
    dim = model.ground.dim * symmetries
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
