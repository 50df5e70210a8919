"""Encoders: any timm backbone by name + a pooling head, L2-normalised embeddings (docs/method.md §3.1).

Two backbone families: CNNs, whose last feature map (B, C, h, w) is pooled directly, and timm's ViT family (ViT,
DeiT, DINOv2, CLIP, EVA: `forward_features` gives tokens (B, prefix + h*w, C)), whose patch tokens are put back on
their (h, w) grid so the same GeM/avg/SAFA heads pool them, or whose class token is the descriptor (`head: cls`).
A ViT encoder is built for its own input size (`img_size`, timm resamples pretrained position embeddings once)
with `dynamic_img_size`, so panoramas keep their aspect ratio and a shared encoder also takes the tiles.

`model.freeze` keeps the backbone (or all but its last k transformer blocks) fixed: those parameters lose
`requires_grad`, stay in eval mode, and the optimiser never holds them; the pooling head and neck still train.

The ground and satellite branches are separate encoders by default (as in UCVGL); the learnable logit scale
(temperature) lives in the model so it is saved in every checkpoint (fixing docs/method.md §9.6).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvgl.weights import create_backbone

#: Normalisation of backbones whose timm config names none.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Buffers that checkpoints written before they were persistent lack (filled from the backbone's config).
NORMALISATION_KEYS = ("mean", "std")
#: Pooling heads (`model.head`); `cls` only for token backbones with a class token.
HEADS = ("gem", "avg", "safa", "cls")
#: `model.freeze`: none | backbone | last-<k> (all but the last k transformer blocks frozen).
FREEZE_PATTERN = re.compile(r"none|backbone|last-([1-9][0-9]*)")


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial grid (p learnable, p=1 is average pooling)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = nn.Parameter(torch.tensor(p)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class SAFA(nn.Module):
    """Spatial-aware feature aggregation (Shi et al. 2019), the head UCVGL uses (docs/method.md §3.1).

    K spatial weight maps are predicted from the channel-wise max of the feature map by K two-layer linear
    maps hw -> hw/2 -> hw; the descriptor is the feature map weighted by each map, so it keeps the layout
    (where along the panorama / where in the tile) that global pooling throws away.
    """

    def __init__(self, hw: int, maps: int = 8) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(maps, hw, max(1, hw // 2)) * 0.005)
        self.b1 = nn.Parameter(torch.full((maps, 1, max(1, hw // 2)), 0.1))
        self.w2 = nn.Parameter(torch.randn(maps, max(1, hw // 2), hw) * 0.005)
        self.b2 = nn.Parameter(torch.full((maps, 1, hw), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        feats = x.flatten(2)  # B, C, hw
        m = feats.amax(dim=1)  # B, hw
        a = torch.einsum("bh,khd->kbd", m, self.w1) + self.b1
        a = torch.einsum("kbd,kdh->kbh", a, self.w2) + self.b2  # K, B, hw
        return torch.einsum("bch,kbh->bkc", feats, a).reshape(b, -1)


class Encoder(nn.Module):
    """timm backbone (feature map or patch grid) -> pooling head -> BatchNorm (+ linear projection) -> L2
    normalisation."""

    def __init__(self, backbone: str, input_hw: tuple[int, int], head: str = "gem", dim: int | None = None,
                 weights: str | None = None, pretrained: bool = False, drop_path: float = 0.0,
                 safa_maps: int = 8, freeze: str = "none") -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, weights, pretrained, drop_path,
                                        **token_backbone_kwargs(backbone, input_hw))
        self.tokens = is_token_backbone(self.backbone)
        # The backbone's own input normalisation (CLIP and DINOv2 weights differ from ImageNet's); persistent,
        # so every checkpoint records what its encoder was fed.
        mean, std = backbone_normalisation(self.backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        with torch.no_grad():
            fmap = feature_map_shape(self.backbone, backbone, input_hw)
        channels, hw = fmap[1], fmap[2] * fmap[3]
        check_head(head, self.backbone, backbone)
        self.head_name = head
        if head == "gem":
            self.head, out = GeM(), channels
        elif head == "avg":
            self.head, out = nn.AdaptiveAvgPool2d(1), channels
        elif head == "safa":
            self.head, out = SAFA(hw, safa_maps), channels * safa_maps
        else:  # cls: the class token is the descriptor (check_head)
            self.head, out = nn.Identity(), channels
        # BatchNorm before the projection: from random init every image pools to nearly the same vector, and
        # standardising across the batch removes that shared direction so the contrastive loss can start.
        self.proj = nn.Sequential(nn.BatchNorm1d(out), nn.Linear(out, dim) if dim else nn.Identity())
        self.dim = dim or out
        #: Backbone submodules (names under `backbone`) that `model.freeze` fixed: kept in eval mode.
        self.frozen_modules = freeze_backbone(self.backbone, freeze, backbone)
        self.train()

    def train(self, mode: bool = True) -> Encoder:
        """As nn.Module.train, but frozen backbone parts stay in eval mode (no dropout or stochastic depth, no
        BatchNorm statistics): a frozen backbone computes the same features in training as in embedding."""
        super().train(mode)
        for name in self.frozen_modules:
            self.backbone.get_submodule(name).eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head pools: the backbone's (B, C, h, w) feature map or patch grid; for head cls the (B, C)
        class token."""
        x = self.backbone.forward_features((images - self.mean) / self.std)
        if not self.tokens:
            return x
        if self.head_name == "cls":
            return x[:, 0]
        return token_grid(x, self.backbone.num_prefix_tokens,
                          self.backbone.patch_embed.dynamic_feat_size(tuple(images.shape[-2:])))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B,3,H,W) floats in [0,1] -> (B,dim) unit vectors."""
        return self.pool(self.features(images))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """What `features` returned -> (B,dim) unit vectors: the head, the neck and the normalisation (the part
        that trains when `model.freeze: backbone`)."""
        pooled = self.head(features).flatten(1)
        # The neck (batch statistics) and the normalisation run in the parameters' precision (fp32), also under
        # bf16 autocast.
        with torch.autocast(pooled.device.type, enabled=False):
            return F.normalize(self.proj(pooled.to(self.proj[0].weight.dtype)), dim=-1)


def is_token_backbone(backbone: nn.Module) -> bool:
    """A timm ViT-family model (ViT, DeiT, DINOv2, CLIP, EVA, ...): patch embedding, prefix (class, register)
    tokens, transformer blocks and timm's dynamic image size; `forward_features` gives (B, prefix + h*w, C)."""
    return all(hasattr(backbone, a) for a in ("patch_embed", "num_prefix_tokens", "dynamic_img_size", "blocks"))


@functools.lru_cache(maxsize=64)
def is_token_architecture(name: str) -> bool:
    """`is_token_backbone` of timm's `name`, from a model built on the meta device (no weights, no compute)."""
    import timm

    with torch.device("meta"):
        return is_token_backbone(timm.create_model(name, pretrained=False, num_classes=0))


def token_backbone_kwargs(name: str, input_hw: tuple[int, int]) -> dict[str, Any]:
    """timm kwargs of a ViT-family backbone for `input_hw` inputs: position embeddings for that grid (timm
    resamples pretrained ones when loading) and `dynamic_img_size` for any other size (a shared encoder's second
    view); none for a CNN."""
    if not is_token_architecture(name):
        return {}
    return {"img_size": tuple(int(v) for v in input_hw), "dynamic_img_size": True}


def token_grid(tokens: torch.Tensor, prefix: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(B, prefix + h*w, C) tokens -> (B, C, h, w): the patch tokens on their grid, prefix (class, register)
    tokens dropped. timm orders patch tokens row by row, so token prefix + i*w + j is grid cell (i, j)."""
    b, n, c = tokens.shape
    h, w = grid_hw
    if n - prefix != h * w:
        raise ValueError(f"{n} tokens are not {prefix} prefix tokens and a {h}x{w} patch grid")
    return tokens[:, prefix:].transpose(1, 2).reshape(b, c, h, w)


def check_head(head: str, backbone: nn.Module, name: str) -> None:
    """`model.head` is known, and `cls` has a class token to take."""
    if head not in HEADS:
        raise ValueError(f"model.head must be one of {', '.join(HEADS)}; got {head!r}")
    if head == "cls" and not (is_token_backbone(backbone) and getattr(backbone, "cls_token", None) is not None):
        raise ValueError(f"model.head cls: {name} has no class token (cls is for ViT-family backbones with one; "
                         "use gem, avg or safa)")


def parse_freeze(freeze: str | None) -> tuple[str, int]:
    """`model.freeze` as (mode, k): ("none", 0), ("backbone", 0) or ("last", k); errors name the key."""
    match = FREEZE_PATTERN.fullmatch(str(freeze or "none"))
    if match is None:
        raise ValueError(f"model.freeze {freeze!r}: expected none, backbone or last-<k> (all but the last k "
                         "transformer blocks of the backbone frozen, k >= 1), e.g. last-2")
    if match.group(1):
        return "last", int(match.group(1))
    return match.group(0), 0


def freeze_backbone(backbone: nn.Module, freeze: str | None, name: str) -> list[str]:
    """Apply `model.freeze` to `backbone` (requires_grad off) and return the names of the submodules it fixed.

    last-k keeps the last k of `backbone.blocks` trainable together with everything after them (the final norm,
    a pooling or projection module), and freezes everything before: the patch embedding, class/register tokens,
    position embedding and the other blocks."""
    mode, k = parse_freeze(freeze)
    if mode == "none":
        return []
    if mode == "backbone":
        backbone.requires_grad_(False)
        return [""]
    blocks = getattr(backbone, "blocks", None) if is_token_backbone(backbone) else None
    if not isinstance(blocks, nn.Sequential | nn.ModuleList):
        raise ValueError(f"model.freeze {freeze}: {name} has no transformer blocks (last-k is for ViT-family "
                         "backbones; use none or backbone)")
    if k > len(blocks):
        raise ValueError(f"model.freeze {freeze}: {name} has only {len(blocks)} blocks (k at most {len(blocks)}; "
                         "backbone freezes them all)")
    children = [n for n, _ in backbone.named_children()]
    before = children[:children.index("blocks")]
    for param in backbone.parameters(recurse=False):  # class/register tokens, position embedding
        param.requires_grad_(False)
    frozen = before + [f"blocks.{i}" for i in range(len(blocks) - k)]
    for module in frozen:
        backbone.get_submodule(module).requires_grad_(False)
    return frozen


class CrossViewModel(nn.Module):
    """Ground and satellite encoders plus the learnable logit scale of the InfoNCE loss."""

    def __init__(self, cfg: dict[str, Any], load_pretrained: bool = True) -> None:
        """`cfg` is the `model` config slice; `load_pretrained=False` skips `model.weights`/`model.pretrained`
        (the caller loads a checkpoint over every weight anyway)."""
        super().__init__()
        common = dict(backbone=cfg["backbone"], head=cfg["head"], dim=cfg.get("dim"),
                      weights=cfg.get("weights") if load_pretrained else None,
                      pretrained=bool(cfg.get("pretrained")) and load_pretrained,
                      drop_path=cfg.get("drop_path", 0.0), freeze=cfg.get("freeze", "none"))
        mask, self.satellite_box = satellite_input_mask(cfg)
        self.ground = Encoder(input_hw=tuple(cfg["ground_size"]), **common)
        self.satellite = self.ground if cfg.get("shared", False) else Encoder(
            input_hw=tuple(mask.shape), **common)
        if self.ground.dim != self.satellite.dim:
            raise ValueError("model: ground and satellite embeddings differ in size; set model.dim")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("satellite_mask", mask.view(1, 1, *mask.shape), persistent=False)

    def encode(self, images: torch.Tensor, view: str) -> torch.Tensor:
        return self.encoder(view)(self.view_input(images, view))

    def encoder(self, view: str) -> Encoder:
        return self.ground if view == "ground" else self.satellite

    def view_input(self, images: torch.Tensor, view: str) -> torch.Tensor:
        """What the `view` encoder sees of `images`: satellite tiles masked to the centre disc and cropped to the
        square around it (`model.satellite_mask_radius`, `model.satellite_crop`); panoramas as they are."""
        if view == "ground":
            return images
        if self.satellite_box is not None:
            images = images[(..., *self.satellite_box)]
        return images * self.satellite_mask

    def backbone_fingerprint(self) -> str:
        """SHA-256 of everything the backbones' features depend on: both encoders' backbone weights and buffers,
        their input normalisation, the satellite mask and crop. Equal fingerprints, equal `Encoder.features`."""
        digest = hashlib.sha256()
        for view in ("ground", "satellite"):
            enc = self.encoder(view)
            tensors = [("mean", enc.mean), ("std", enc.std), *enc.backbone.state_dict().items()]
            for name, tensor in tensors:
                digest.update(f"{view}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest.update(self.satellite_mask.detach().cpu().to(torch.uint8).numpy().tobytes())
        digest.update(repr(self.satellite_box).encode())
        return digest.hexdigest()

    def backbone_frozen(self) -> bool:
        """Whether `model.freeze: backbone` fixed every backbone parameter of both encoders (their features are
        then the same in every round: `cvgl.embed.backbone_features` can be computed once)."""
        return all(not p.requires_grad for v in ("ground", "satellite") for p in self.encoder(v).backbone.parameters())

    def forward(self, ground: torch.Tensor, satellite: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both views' embeddings and the log logit scale: one call per training step, as DDP requires.

        The scale goes out through an op (`clone`) so DDP sees every parameter the loss uses in the forward graph.
        """
        return self.encode(ground, "ground"), self.encode(satellite, "satellite"), self.logit_scale.clone()


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a checkpoint's weights strictly; checkpoints older than the persistent normalisation buffers keep
    the backbone's (the values those checkpoints were trained with)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[-1] not in NORMALISATION_KEYS]
    if missing or unexpected:
        raise ValueError(f"{source}: its weights do not fit the model its config describes (missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]})")


def backbone_normalisation(backbone: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the backbone's pretrained config (timm.data.resolve_data_config), ImageNet's if none."""
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=backbone)
    return tuple(data.get("mean", IMAGENET_MEAN)), tuple(data.get("std", IMAGENET_STD))


def feature_map_shape(backbone: nn.Module, name: str, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(1, C, h, w) of the backbone's last feature map (a ViT's patch grid) for one `input_hw` image; errors name
    the config keys.

    On a backbone built on the meta device this costs no compute (`check_backbone`)."""
    device = next(backbone.parameters()).device
    tokens = is_token_backbone(backbone)
    if tokens:
        ph, pw = backbone.patch_embed.patch_size
        if input_hw[0] % ph or input_hw[1] % pw:
            raise ValueError(f"model.backbone {name}: a {input_hw[0]}x{input_hw[1]} input is not a whole number of "
                             f"its {ph}x{pw} patches (model.ground_size / satellite_size, after "
                             "model.satellite_crop, must be multiples of the patch size)")
    try:
        fmap = backbone.forward_features(torch.zeros(1, 3, *input_hw, device=device))
    except RuntimeError as err:  # e.g. a kernel larger than the last feature map
        raise ValueError(f"model.backbone {name}: a {input_hw[0]}x{input_hw[1]} input is too small for it "
                         f"(model.ground_size / satellite_size, after model.satellite_crop): "
                         f"{str(err).splitlines()[0]}") from None
    if tokens:
        fmap = token_grid(fmap, backbone.num_prefix_tokens, backbone.patch_embed.dynamic_feat_size(input_hw))
    if fmap.ndim != 4:
        raise ValueError(f"model.backbone {name}: expected a convolutional feature map (B,C,H,W) or ViT tokens, "
                         f"got shape {tuple(fmap.shape)}; choose a CNN or a ViT-family backbone")
    return tuple(fmap.shape)  # type: ignore[return-value]


def satellite_input_mask(cfg: dict[str, Any]) -> tuple[torch.Tensor, tuple[slice, slice] | None]:
    """The mask satellite inputs are multiplied by, at the encoder's input size, and the crop box (or None)
    that cuts that input out of a `model.satellite_size` tile; errors name the keys."""
    size = tuple(cfg["satellite_size"])
    radius = cfg.get("satellite_mask_radius")
    # on the CPU whatever the default device: the mask is a constant of the config, and a model built on the meta
    # device (shape checks) still needs its values here
    mask = centre_disc(size, radius) if radius else torch.ones(size, device="cpu")
    if not mask.any():
        raise ValueError(f"model.satellite_mask_radius {radius}: the disc holds no pixel of a {size} tile")
    if not cfg.get("satellite_crop", False):
        return mask, None
    if not radius:
        raise ValueError("model.satellite_crop needs model.satellite_mask_radius (the disc to crop to)")
    box = mask_box(mask)
    return mask[box], box


def encoder_input_sizes(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The (H, W) each encoder sees: the ground size, and the satellite size after the crop."""
    mask, _ = satellite_input_mask(cfg)
    return {"ground": tuple(cfg["ground_size"]), "satellite": tuple(mask.shape)}  # type: ignore[dict-item]


def check_backbone(cfg: dict[str, Any]) -> None:
    """What building the `model` slice would find out in a job, found now: timm knows `model.backbone` (and its
    pretrained tag where `model.pretrained` asks for one), each encoder input is large enough for it (a whole
    number of a ViT's patches), `model.head` fits it, `model.freeze` is valid for it, a shared SAFA encoder sees
    one feature grid. The backbone is built on the meta device: no weights, no compute."""
    import timm
    from timm.models import get_pretrained_cfg

    name = cfg["backbone"]
    if not timm.is_model(name):
        arch = name.split(".")[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ValueError(f"model.backbone {name!r}: timm has no such model"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    try:
        pretrained_cfg = get_pretrained_cfg(name)
    except RuntimeError:  # a tag timm does not list for this architecture
        tags = timm.list_pretrained(name.split(".")[0] + ".*")
        raise ValueError(f"model.backbone {name!r}: timm has no such pretrained tag (known: "
                         f"{', '.join(tags) or 'none'})") from None
    if cfg.get("pretrained") and not cfg.get("weights") and pretrained_cfg is None:
        raise ValueError(f"model.pretrained: timm has no pretrained weights for {name!r}")
    parse_freeze(cfg.get("freeze"))
    sizes = encoder_input_sizes(cfg)
    with torch.device("meta"):
        backbone = timm.create_model(name, pretrained=False, num_classes=0,
                                     **token_backbone_kwargs(name, sizes["ground"]))
        grids = {view: feature_map_shape(backbone, name, hw)[2:] for view, hw in sizes.items()}
    check_head(cfg["head"], backbone, name)
    freeze_backbone(backbone, cfg.get("freeze"), name)
    if cfg.get("shared") and cfg["head"] == "safa" and grids["ground"] != grids["satellite"]:
        raise ValueError(f"model.shared with model.head safa: one SAFA head needs one feature grid, but the "
                         f"ground input gives {grids['ground']} and the satellite input {grids['satellite']} "
                         "(make model.ground_size and the satellite input equal, or use head gem/avg)")


def centre_disc(size_hw: tuple[int, int], radius: float) -> torch.Tensor:
    """1 inside a centred disc of `radius` x half the tile side, 0 outside.

    A projected panorama reproduces its tile only near the camera: farther out the flat-ground assumption
    fails (facades smear radially where the tile shows roofs). Looking at that disc alone, in every satellite
    input, lets the cold start learn what transfers from translated projections to real tiles.
    """
    h, w = size_hw
    ys, xs = torch.meshgrid(torch.arange(h, device="cpu") + 0.5 - h / 2, torch.arange(w, device="cpu") + 0.5 - w / 2,
                            indexing="ij")
    return ((ys**2 + xs**2).sqrt() <= radius * min(h, w) / 2).float()


def mask_box(mask: torch.Tensor) -> tuple[slice, slice]:
    """The rows and columns of the smallest box holding every nonzero pixel of a (H, W) mask.

    Cropping satellite inputs to it (`model.satellite_crop`) keeps every pixel the disc lets through and drops
    the zeros around it: the same information for (2 x radius)^2 of the encoder's compute.
    """
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is available")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of forward passes for `precision` (auto | fp32 | bf16); None = plain fp32.

    auto = bf16 on CUDA devices that support it, fp32 elsewhere, so CPU runs stay bit-identical to fp32 ones.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision not in ("auto", "bf16"):
        raise ValueError(f"precision must be one of auto, fp32, bf16; got {precision!r}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "auto":
            return None
        raise RuntimeError(f"precision: bf16 was requested but {torch.cuda.get_device_name(device)} lacks bf16")
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass (`autocast_dtype`); nothing at all for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
