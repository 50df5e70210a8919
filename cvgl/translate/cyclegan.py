"""Unpaired projection -> satellite translation with a CycleGAN (docs/method.md §2.3; Zhu et al. 2017).

Domain A = train BEV projections, domain B = train satellite tiles, listed independently and never paired: each
epoch walks A in a seeded random order and draws B uniformly at random, as the official `UnalignedDataset`.
ResNet generators, PatchGAN discriminators, least-squares GAN loss, cycle and identity L1, a history pool of
generated images, Adam with a constant then linearly decaying learning rate. Unlike the official code (docs/method.md
§9.17) training and inference see the same resolution and scale: whole images at `size`, random h-flip only.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvgl.augment import resize_images
from cvgl.config import schema_defaults
from cvgl.io import Progress, RowBuffer, atomic_path, reading
from cvgl.models import resolve_device
from cvgl.train import resume_settings

#: `translate.cyclegan`'s defaults (the paper's) and the top-level ones of the job's seed, threads and device,
#: read from the config schema, which states each default once.
_GAN, _TOP = schema_defaults("translate", "cyclegan"), schema_defaults()


@dataclass(frozen=True)
class CycleGANConfig:
    """Sizes, epochs and loss weights (`translate.cyclegan`), and the job's seed, threads and device. A field
    left out takes the schema's default, the paper's: 320 px, widths 64, 9 blocks, 100 + 100 epochs, batch 1."""

    size: int = _GAN["size"]                        # train and inference side in px (paper: 360->320 crops)
    ngf: int = _GAN["ngf"]                          # generator width
    ndf: int = _GAN["ndf"]                          # discriminator width
    blocks: int = _GAN["blocks"]                    # residual blocks (resnet_9blocks)
    disc_layers: int = _GAN["disc_layers"]          # PatchGAN depth (70x70 receptive field at 3)
    epochs: int = _GAN["epochs"]                    # epochs at the initial learning rate
    epochs_decay: int = _GAN["epochs_decay"]        # epochs of linear decay to 0
    lr: float = _GAN["lr"]
    beta1: float = _GAN["beta1"]
    lambda_cycle: float = _GAN["lambda_cycle"]      # both directions
    lambda_identity: float = _GAN["lambda_identity"]  # times lambda_cycle
    pool_size: int = _GAN["pool_size"]
    batch_size: int = _GAN["batch_size"]
    seed: int = _TOP["seed"]
    threads: int = _TOP["threads"]
    device: str = _TOP["device"]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> CycleGANConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"translate.cyclegan: unknown key(s) {unknown}; known: {sorted(known)}")
        out = cls(**cfg)
        for name in ("size", "ngf", "ndf", "blocks", "disc_layers", "batch_size"):
            if getattr(out, name) < 1:
                raise ValueError(f"translate.cyclegan.{name} must be >= 1, got {getattr(out, name)}")
        if out.size % 4:
            raise ValueError(f"translate.cyclegan.size must be a multiple of 4 (two stride-2 stages), got {out.size}")
        return out


# ------------------------------------------------------------------------------------------------- networks


class ResnetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def resnet_generator(ngf: int, blocks: int) -> nn.Sequential:
    """c7s1-ngf, two stride-2 downsamplings, `blocks` residual blocks, two upsamplings, c7s1-3 + tanh."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for mult in (1, 2):
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ngf * mult * 2),
                   nn.ReLU(True)]
    layers += [ResnetBlock(ngf * 4) for _ in range(blocks)]
    for mult in (4, 2):
        layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patch_discriminator(ndf: int, layers: int) -> nn.Sequential:
    """PatchGAN: a grid of real/fake scores, each seeing one patch (70x70 px with 3 layers)."""
    mods: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    width = ndf
    for n in range(1, layers + 1):
        out = ndf * min(2 ** n, 8)
        mods += [nn.Conv2d(width, out, 4, stride=2 if n < layers else 1, padding=1), nn.InstanceNorm2d(out),
                 nn.LeakyReLU(0.2, True)]
        width = out
    mods += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
    return nn.Sequential(*mods)


def init_weights(module: nn.Module, gen: torch.Generator) -> None:
    """N(0, 0.02) for convolutions, as the official code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.02)
                m.bias.zero_()


class ImagePool:
    """History of generated images: the discriminators also see older fakes (Shrivastava et al. 2017)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Fakes for the discriminator update, always detached from the generators' graph."""
        if self.size == 0:
            return batch.detach()  # pool_size 0: the fresh fakes, as for any size
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(1, generator=gen).item() < 0.5:
                i = int(torch.randint(0, self.size, (1,), generator=gen))
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state(self) -> list[torch.Tensor]:
        return [t.cpu() for t in self.images]


# ------------------------------------------------------------------------------------------------- training


def _to_unit(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=gen) < 0.5).view(-1, 1, 1, 1).to(x.device)
    return torch.where(flip, x.flip(-1), x)


def lr_factor(epoch: int, cfg: CycleGANConfig) -> float:
    """Constant for `epochs`, then linear decay towards 0 over `epochs_decay` (the official 'linear' policy)."""
    return 1.0 - max(0, epoch + 1 - cfg.epochs) / float(cfg.epochs_decay + 1)


class CycleGAN(nn.Module):
    """G_A: projection -> satellite, G_B: satellite -> projection, D_A judges satellites, D_B projections."""

    def __init__(self, cfg: CycleGANConfig) -> None:
        super().__init__()
        self.g_a, self.g_b = resnet_generator(cfg.ngf, cfg.blocks), resnet_generator(cfg.ngf, cfg.blocks)
        self.d_a = patch_discriminator(cfg.ndf, cfg.disc_layers)
        self.d_b = patch_discriminator(cfg.ndf, cfg.disc_layers)
        gen = torch.Generator().manual_seed(cfg.seed)
        for net in (self.g_a, self.g_b, self.d_a, self.d_b):
            init_weights(net, gen)


def _lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


def train_step(model: CycleGAN, real_a: torch.Tensor, real_b: torch.Tensor, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, pools: tuple[ImagePool, ImagePool], cfg: CycleGANConfig,
               gen: torch.Generator) -> dict[str, float]:
    """One generator update, then one discriminator update (the official order)."""
    lam, lam_id = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity
    fake_b, fake_a = model.g_a(real_a), model.g_b(real_b)
    for d in (model.d_a, model.d_b):
        d.requires_grad_(False)
    loss_gan = _lsgan(model.d_a(fake_b), True) + _lsgan(model.d_b(fake_a), True)
    loss_cycle = lam * (F.l1_loss(model.g_b(fake_b), real_a) + F.l1_loss(model.g_a(fake_a), real_b))
    loss_id = lam_id * (F.l1_loss(model.g_a(real_b), real_b) + F.l1_loss(model.g_b(real_a), real_a)) if lam_id else 0
    opt_g.zero_grad(set_to_none=True)
    (loss_gan + loss_cycle + loss_id).backward()
    opt_g.step()
    for d in (model.d_a, model.d_b):
        d.requires_grad_(True)
    old_b, old_a = pools[0].query(fake_b, gen), pools[1].query(fake_a, gen)
    loss_d = 0.5 * (_lsgan(model.d_a(real_b), True) + _lsgan(model.d_a(old_b), False)) \
        + 0.5 * (_lsgan(model.d_b(real_a), True) + _lsgan(model.d_b(old_a), False))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v)
            for k, v in (("gan", loss_gan), ("cycle", loss_cycle), ("identity", loss_id), ("disc", loss_d))}


def unpaired_epoch(n_a: int, n_b: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's sampling (the official `UnalignedDataset`): every A once in a shuffled order, and for each a
    B drawn uniformly at random, independently of A, so no pairing of the two sets can leak into training."""
    return torch.randperm(n_a, generator=gen).numpy(), torch.randint(0, n_b, (n_a,), generator=gen).numpy()


def train_cyclegan(projections: np.ndarray, satellites: np.ndarray, cfg: CycleGANConfig, out: Path
                   ) -> CycleGAN:
    """Train on two unpaired uint8 sets at `cfg.size`; per-epoch state in `<out>.state`, resumed if it matches."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model = CycleGAN(cfg).to(device)
    opt_g = torch.optim.Adam([*model.g_a.parameters(), *model.g_b.parameters()], lr=cfg.lr,
                             betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam([*model.d_a.parameters(), *model.d_b.parameters()], lr=cfg.lr,
                             betas=(cfg.beta1, 0.999))
    pools = (ImagePool(cfg.pool_size), ImagePool(cfg.pool_size))
    state_path = out.with_name(out.name + ".state")
    start = 0
    if state_path.exists():
        with reading(state_path, "CycleGAN resume state"):
            state = torch.load(state_path, map_location=device, weights_only=False)
        if resume_settings(state.get("config") or {}) == resume_settings(asdict(cfg)):
            model.load_state_dict(state["model"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            pools[0].images, pools[1].images = ([t.to(device) for t in p] for p in state["pools"])
            start = state["epoch"]
            print(f"[cyclegan] resuming after epoch {start}", file=sys.stderr, flush=True)
    total = cfg.epochs + cfg.epochs_decay
    steps = len(projections) // cfg.batch_size
    for epoch in range(start, total):
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(epoch, cfg)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order_a, draw_b = unpaired_epoch(len(projections), len(satellites), gen)
        # a few lines per epoch, like the encoders' loops: the paper's 200 epochs stay a readable log
        progress = Progress(steps, f"cyclegan epoch {epoch + 1}/{total}", step=0.25)
        sums: dict[str, float] = {}
        t0 = time.time()
        model.train()
        for step in range(steps):
            idx = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
            a = _random_flip(_to_unit(projections[np.sort(order_a[idx])], device), gen)
            b = _random_flip(_to_unit(satellites[np.sort(draw_b[idx])], device), gen)
            losses = train_step(model, a, b, opt_g, opt_d, pools, cfg, gen)
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            progress.update(1, f"cycle {losses['cycle']:.3f} gan {losses['gan']:.3f}")
        means = " ".join(f"{k} {v / max(steps, 1):.4f}" for k, v in sums.items())
        print(f"[cyclegan] epoch {epoch + 1}/{total} {means} lr {cfg.lr * lr_factor(epoch, cfg):.2e} "
              f"{time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        state = {"model": model.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "pools": [p.state() for p in pools], "epoch": epoch + 1, "config": asdict(cfg)}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
    return model


@torch.no_grad()
def translate_batch(g_a: nn.Module, projections: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 projections at the training size -> uint8 fake satellites (rounded, not truncated)."""
    g_a.eval()
    out = g_a(_to_unit(projections, device))
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


class CycleGANTranslator:
    """The translator interface of `cvgl.translate` (update / finish / translate) around a CycleGAN.

    `update` keeps both sets in memory at `size` (uint8: 1,200 images at 64 px are 15 MB); `finish` trains;
    `translate` maps projections at `size` and blanks what the projection cannot see.
    """

    method = "cyclegan"

    def __init__(self, options: dict[str, Any] | None = None, state_path: Path | None = None) -> None:
        self.cfg = CycleGANConfig.from_dict(options)
        self.out = Path(state_path) if state_path is not None else Path("cyclegan.pt")
        # The resized images wait on disk, not in memory (the paper's 320 px CVUSA sets are ~22 GB).
        self.projections, self.satellites = RowBuffer(), RowBuffer()
        self.model: CycleGAN | None = None

    def update(self, projections: np.ndarray | None = None, satellites: np.ndarray | None = None,
               valid: np.ndarray | None = None) -> None:
        if projections is not None:
            self.projections.append(resize_images(projections, (self.cfg.size, self.cfg.size)))
        if satellites is not None:
            self.satellites.append(resize_images(satellites, (self.cfg.size, self.cfg.size)))

    def finish(self) -> None:
        if not self.projections.rows or not self.satellites.rows:
            raise ValueError("translate: no images to train the CycleGAN on")
        a, b = self.projections.array(), self.satellites.array()
        if len(a) < self.cfg.batch_size:
            raise ValueError(f"translate.cyclegan.batch_size {self.cfg.batch_size} exceeds the {len(a)} projections")
        self.model = train_cyclegan(a, b, self.cfg, self.out)
        self.projections, self.satellites = RowBuffer(), RowBuffer()

    def translate(self, projections: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("translate: the translator has not been fitted")
        device = next(self.model.parameters()).device
        out = translate_batch(self.model.g_a, resize_images(projections, (self.cfg.size, self.cfg.size)), device)
        if valid is not None:
            keep = F.interpolate(torch.from_numpy(valid.astype(np.float32))[None, None], size=out.shape[1:3],
                                 mode="nearest")[0, 0].numpy() > 0.5
            out[:, ~keep] = 0  # the unseen region stays empty, as in the raw projection
        return out

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError("translate: the translator has not been fitted")
        return {"method": self.method, "config": asdict(self.cfg), "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cfg = CycleGANConfig.from_dict(state["config"])
        self.model = CycleGAN(self.cfg)
        self.model.load_state_dict(state["model"])
