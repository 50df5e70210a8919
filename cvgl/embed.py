"""Embedding images with a trained encoder, in batches, without gradients; and a frozen backbone's features,
stored once and pooled by each round's head and neck."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvgl.augment import JOINT_SYMMETRIES, to_tensor, view_symmetry
from cvgl.io import Progress, atomic_path
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


#: How `write_backbone_features` stores features: half the bytes of float32, and a dtype numpy maps (bf16 is not).
FEATURE_DTYPE = np.float16


@torch.no_grad()
def write_backbone_features(model: CrossViewModel, images: np.ndarray, view: str, batch_size: int,
                            device: torch.device, path: Path, dtype: torch.dtype | None = None,
                            symmetries: int = 1, label: str = "features") -> tuple[int, ...]:
    """Write the `view` backbone's features (what its head pools) of each image under the first k joint
    symmetries to the .npy `path`, shape (N, k, *feature shape), float16, batch by batch through a memory map:
    memory O(batch), and no half-written file after a crash. Returns the array's shape.

    `embed_features` turns them into what `embed_images` returns, so a frozen backbone (`model.freeze:
    backbone`) runs once for all rounds while the head and neck change.
    """
    if symmetries not in JOINT_SYMMETRIES:
        raise ValueError(f"symmetries must be one of {sorted(JOINT_SYMMETRIES)}, got {symmetries}")
    model.eval()
    encoder = model.encoder(view)
    progress = Progress(len(images), label, step=0.25)
    with atomic_path(path) as tmp:
        out: np.ndarray | None = None
        for i in range(0, len(images), batch_size):
            chunk = to_tensor(images[i:i + batch_size], device)
            parts = []
            for flip, turns in JOINT_SYMMETRIES[symmetries]:
                with autocast(chunk.device, dtype):
                    x = model.view_input(view_symmetry(chunk, view, flip, turns), view)
                    parts.append(encoder.features(x).float())
            feats = torch.stack(parts, dim=1).cpu().numpy().astype(FEATURE_DTYPE)
            if out is None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=FEATURE_DTYPE,
                                                shape=(len(images), *feats.shape[1:]))
            out[i:i + len(feats)] = feats
            progress.update(len(chunk))
        if out is None:
            raise ValueError(f"{path}: no images to take features of")
        shape = tuple(out.shape)
        out.flush()
        del out  # the map closes before the file is renamed into place
    return shape


@torch.no_grad()
def embed_features(model: CrossViewModel, features: np.ndarray, view: str, batch_size: int,
                   device: torch.device, label: str = "embed") -> np.ndarray:
    """(N, k, *feature shape) backbone features (`write_backbone_features`) -> (N, k*d) float32 embeddings,
    as `embed_images` would give for the images under the same k symmetries (up to the float16 storage)."""
    model.eval()
    encoder = model.encoder(view)
    k = features.shape[1]
    out: list[np.ndarray] = []
    progress = Progress(len(features), label, step=0.25)
    for i in range(0, len(features), batch_size):
        chunk = torch.from_numpy(np.asarray(features[i:i + batch_size], dtype=np.float32)).to(device)
        parts = [encoder.pool(chunk[:, j]).float() for j in range(k)]
        out.append((torch.cat(parts, dim=1) / k ** 0.5).cpu().numpy())
        progress.update(len(chunk))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.dim * k), np.float32)
