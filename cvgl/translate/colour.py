"""Colour-statistics translators: per-channel histogram matching between two unpaired image sets."""

from __future__ import annotations

from typing import Any

import numpy as np


def channel_histograms(images: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(3, 256) pixel counts per channel over a (N,H,W,3) uint8 batch, restricted to `valid` pixels."""
    flat = images.reshape(-1, 3) if valid is None else images[:, valid].reshape(-1, 3)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(3)]).astype(np.float64)


def matching_lut(source_hist: np.ndarray, target_hist: np.ndarray) -> np.ndarray:
    """Per-channel 256-entry lookup table that maps source quantiles onto target quantiles."""
    lut = np.empty((3, 256), dtype=np.uint8)
    for c in range(3):
        src = np.cumsum(source_hist[c]) / max(source_hist[c].sum(), 1)
        tgt = np.cumsum(target_hist[c]) / max(target_hist[c].sum(), 1)
        lut[c] = np.clip(np.rint(np.interp(src, tgt, np.arange(256))), 0, 255).astype(np.uint8)
    return lut


class ColourTranslator:
    """Match the colour distribution of projections to that of satellite tiles (no pairing needed).

    Statistics of the projections are taken over the pixels that carry content (`valid` mask): the black
    disc/corners a projection cannot see would otherwise skew the dark end of every channel.
    """

    method = "colour"

    def __init__(self) -> None:
        self.source = np.zeros((3, 256))
        self.target = np.zeros((3, 256))
        self.lut: np.ndarray | None = None

    def update(self, projections: np.ndarray | None = None, satellites: np.ndarray | None = None,
               valid: np.ndarray | None = None) -> None:
        """Accumulate statistics from a batch of either set (the two are streamed independently)."""
        if projections is not None:
            self.source += channel_histograms(projections, valid)
        if satellites is not None:
            self.target += channel_histograms(satellites)

    def finish(self) -> None:
        if self.source.sum() == 0 or self.target.sum() == 0:
            raise ValueError("translate: no pixels to fit the colour translator on")
        self.lut = matching_lut(self.source, self.target)

    def translate(self, projections: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        if self.lut is None:
            raise RuntimeError("translate: the translator has not been fitted")
        out = np.stack([self.lut[c][projections[..., c]] for c in range(3)], axis=-1)
        if valid is not None:
            out[:, ~valid] = 0  # keep the unseen region empty, as in the raw projection
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "source": self.source, "target": self.target, "lut": self.lut}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source, self.target, self.lut = state["source"], state["target"], state["lut"]

