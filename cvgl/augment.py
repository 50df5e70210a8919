"""Batched, seeded image augmentations in torch (docs/method.md §3.3), applied to whole batches at once.

Everything draws from an explicit `torch.Generator`, so an epoch's augmentations depend only on
(seed, stage, epoch): results are reproducible and a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float in [0,1] on `device`."""
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).to(device)  # a read-only map: its copy
    return unit_images(x)


def unit_images(x: torch.Tensor) -> torch.Tensor:
    """(B,H,W,3) uint8 tensor -> (B,3,H,W) float in [0,1], on its device."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resize_images(images: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, h, w, 3), antialiased bilinear, rounded; the input itself if already that size."""
    if tuple(images.shape[1:3]) == tuple(size_hw):
        return np.ascontiguousarray(images)
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float()  # read-only maps too
    x = F.interpolate(x, size=tuple(size_hw), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


@dataclass(frozen=True)
class RowDraws:
    """The random draws of a batch of `total` rows, of which the images at hand are `rows`.

    Every draw is made for all `total` rows, in the order one process makes them, and the caller's rows are
    kept: a torchrun rank that reads and augments only its share of a global batch gives its images exactly the
    augmentation they get in a single-process run.
    """

    gen: torch.Generator
    total: int
    rows: slice = field(default_factory=lambda: slice(None))

    def rand(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """One uniform [0, 1) number per row."""
        return torch.rand(self.total, generator=self.gen)[self.rows].to(device)

    def randint(self, low: int, high: int) -> torch.Tensor:
        """One integer in [low, high) per row."""
        return torch.randint(low, high, (self.total,), generator=self.gen)[self.rows]

    def shared_randint(self, low: int, high: int) -> int:
        """One integer in [low, high] for the whole batch."""
        return int(torch.randint(low, high + 1, (1,), generator=self.gen))


Draws = torch.Generator | RowDraws


def row_draws(draws: Draws, x: torch.Tensor) -> RowDraws:
    """`draws` as `RowDraws`: a bare generator draws for exactly the rows of `x`."""
    return draws if isinstance(draws, RowDraws) else RowDraws(draws, x.shape[0])


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def colour_jitter(x: torch.Tensor, gen: Draws, strength: float = 0.4, p: float = 0.8,
                  gray_p: float = 0.2) -> torch.Tensor:
    """Random brightness, contrast and saturation (each factor in [1-s, 1+s]) with prob p; grayscale w.p. gray_p."""
    draws, dev = row_draws(gen, x), x.device
    apply = _per_sample(draws.rand(dev) < p)

    def factor() -> torch.Tensor:
        return _per_sample(1.0 + (2 * draws.rand(dev) - 1) * strength)

    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    y = x * factor()
    y = (y - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
    y_gray = 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
    y = (y - y_gray) * factor() + y_gray
    y = torch.where(apply, y, x).clamp_(0, 1)
    to_gray = _per_sample(draws.rand(dev) < gray_p)
    y_gray = (0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]).expand_as(y)
    return torch.where(to_gray, y_gray, y)


def blur(x: torch.Tensor, gen: Draws, p: float = 0.5) -> torch.Tensor:
    """3x3 Gaussian blur (sigma ~0.8) with probability p per image."""
    k1 = torch.tensor([0.25, 0.5, 0.25], device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return torch.where(_per_sample(row_draws(gen, x).rand(x.device) < p), blurred, x)


def cutout(x: torch.Tensor, gen: Draws, p: float = 0.5, holes: tuple[int, int] = (3, 8),
           frac: tuple[float, float] = (0.1, 0.2)) -> torch.Tensor:
    """Coarse dropout: w.p. p, zero a random number of rectangles each 10-20% of H and W."""
    n, _, h, w = x.shape
    draws = row_draws(gen, x)
    keep = torch.ones(n, 1, h, w, device=x.device)
    ys, xs = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
    for _ in range(draws.shared_randint(*holes)):
        hh = (frac[0] + (frac[1] - frac[0]) * draws.rand()) * h
        ww = (frac[0] + (frac[1] - frac[0]) * draws.rand()) * w
        y0, x0 = draws.rand() * (h - hh), draws.rand() * (w - ww)
        box = ((ys >= y0.view(-1, 1, 1).to(x.device)) & (ys < (y0 + hh).view(-1, 1, 1).to(x.device))
               & (xs >= x0.view(-1, 1, 1).to(x.device)) & (xs < (x0 + ww).view(-1, 1, 1).to(x.device)))
        keep = keep * (~box).unsqueeze(1)
    apply = _per_sample(draws.rand(x.device) < p)
    return torch.where(apply, x * keep, x)


def random_affine(x: torch.Tensor, gen: Draws, shift: float, scale: float, rotate_deg: float,
                  p: float = 0.5) -> torch.Tensor:
    """ShiftScaleRotate with a black border, w.p. p per image (satellite tiles only: it moves the centre)."""
    draws, dev = row_draws(gen, x), x.device
    ang = (2 * draws.rand() - 1) * math.radians(rotate_deg)
    sc = 1 + (2 * draws.rand() - 1) * scale
    tx, ty = [(2 * draws.rand() - 1) * shift * 2 for _ in range(2)]
    on = draws.rand() < p
    ang, sc = torch.where(on, ang, 0.0), torch.where(on, sc, 1.0)
    tx, ty = torch.where(on, tx, 0.0), torch.where(on, ty, 0.0)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(dev)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(_per_sample(mask.to(x.device)), x.flip(-1), x)


def joint_flip_rotate(ground: torch.Tensor, satellite: torch.Tensor, gen: Draws,
                      flip_p: float = 0.5, rotate_p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the same geometric change to both views (docs/method.md §3.3, cross-view).

    Mirroring a north-up tile left-right mirrors the panorama's azimuths; rotating the tile by r*90 degrees
    counter-clockwise moves east to north, i.e. rolls the panorama left by r*W/4 columns.
    """
    draws = row_draws(gen, ground)
    flip = draws.rand() < flip_p
    ground, satellite = hflip(ground, flip), hflip(satellite, flip)
    turn = draws.rand() < rotate_p  # drawn before the turn's size, as always
    rot = torch.where(turn, draws.randint(1, 4), 0)
    width = ground.shape[-1]
    g_out, s_out = ground.clone(), satellite.clone()
    for r in (1, 2, 3):
        idx = (rot == r).nonzero().flatten().to(ground.device)
        if len(idx):
            g_out[idx] = torch.roll(ground[idx], shifts=-r * width // 4, dims=-1)
            s_out[idx] = torch.rot90(satellite[idx], k=r, dims=(-2, -1))
    return g_out, s_out


#: The joint symmetries `joint_flip_rotate` trains the model to respect, as (flip, quarter turns), by count:
#: 1 = identity, 2 = + mirror, 4 = the four rotations, 8 = all of them (the dihedral group of the tile).
JOINT_SYMMETRIES: dict[int, tuple[tuple[bool, int], ...]] = {
    1: ((False, 0),),
    2: ((False, 0), (True, 0)),
    4: tuple((False, r) for r in range(4)),
    8: tuple((f, r) for f in (False, True) for r in range(4)),
}


def view_symmetry(x: torch.Tensor, view: str, flip: bool, quarter_turns: int) -> torch.Tensor:
    """One view's half of a joint symmetry of `joint_flip_rotate` (same order: mirror, then rotate).

    A tile turned by r quarter turns matches its panorama rolled left by r*W/4, so applying the same (flip, r)
    to a ground image and to its tile keeps the pair a pair.
    """
    if flip:
        x = x.flip(-1)
    if quarter_turns:
        if view == "ground":
            x = torch.roll(x, shifts=-quarter_turns * x.shape[-1] // 4, dims=-1)
        else:
            x = torch.rot90(x, k=quarter_turns, dims=(-2, -1))
    return x


def photometric(x: torch.Tensor, gen: Draws, cfg: dict) -> torch.Tensor:
    """The per-view photometric pipeline: dropout, colour jitter / grayscale, blur (`cfg`: a complete `augment`
    section, e.g. from `cvgl.config.with_section_defaults`)."""
    x = cutout(x, gen, p=cfg["cutout_p"])
    x = colour_jitter(x, gen, strength=cfg["jitter"], p=cfg["jitter_p"], gray_p=cfg["gray_p"])
    return blur(x, gen, p=cfg["blur_p"])
