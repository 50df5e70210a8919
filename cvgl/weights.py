"""Backbones and their pretrained weights, the way timm users expect them.

Three sources, picked by the `model` config slice:
- `model.weights: <file>`: a timm state dict on disk (`.safetensors`, `.pth`, `.bin`; with or without its
  classifier; the architecture's own converter, e.g. for Facebook's original ConvNeXt files, is applied). It loads
  strictly: a file for another architecture is an error listing the first keys that do not match, never a
  silent partial load.
- `model.pretrained: true` with a timm name and tag (`convnext_base.fb_in22k_ft_in1k_384`): timm's own download
  into the Hugging Face cache, read from that cache offline (`HF_HUB_OFFLINE=1`). `cvgl fetch-weights <name>`
  fills the cache on a machine that is online (a cluster's login node) before the jobs run on offline nodes.
- neither: random initialisation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: How many mismatching keys an error lists (the rest are counted).
SHOWN_KEYS = 5


def create_backbone(name: str, weights: str | Path | None = None, pretrained: bool = False,
                    drop_path: float = 0.0, **model_kwargs: Any) -> nn.Module:
    """The timm model `name` without its classifier, with weights from `weights`, the hub cache or random.

    `model_kwargs` go to `timm.create_model` (a ViT's `img_size`, `dynamic_img_size`); where they change a
    weight's shape (a ViT's position embedding for another grid), timm's own converter resamples the file's or the
    hub's weights to it."""
    import timm  # imported here: it costs seconds, and most stages never build a model

    kwargs: dict[str, Any] = {"num_classes": 0, "drop_path_rate": drop_path, **model_kwargs}
    if weights:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_weights_file(model, weights)
        return model
    if pretrained:
        return create_from_hub(name, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def create_from_hub(name: str, **kwargs: Any) -> nn.Module:
    """timm's pretrained `name` from the Hugging Face cache (downloaded there when online)."""
    import timm

    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # offline without the file, no network, a tag the hub lacks
        raise RuntimeError(missing_weights_message(name, err)) from None


def missing_weights_message(name: str, err: BaseException | None = None) -> str:
    """The one-line error for pretrained weights that can be neither read from the cache nor downloaded."""
    offline = " (HF_HUB_OFFLINE=1)" if hub_offline() else ""
    detail = str(err).strip().splitlines()[0].rstrip(".") if err is not None and str(err).strip() else ""
    why = f" ({type(err).__name__}: {detail})" if err is not None else ""
    return (f"model.backbone {name}: model.pretrained is true but its weights are not in the Hugging Face cache "
            f"{hub_cache_dir()} and cannot be downloaded here{offline}{why}. Either run `cvgl fetch-weights {name}` "
            "on a machine that is online and shares this HF_HOME, or download the weights file and set "
            "model.weights: <file>")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_weights_cached(name: str) -> bool:
    """Whether the pretrained weights of timm's `name` are in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files)


def fetch_weights(name: str) -> None:
    """Download timm's pretrained `name` into the Hugging Face cache (for offline jobs later)."""
    create_from_hub(name, num_classes=0)
    print(f"{name}: pretrained weights are in the Hugging Face cache {hub_cache_dir()}", file=sys.stderr)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors`/`.pth`/`.bin` file (timm's reader: unwraps `state_dict`/`model`,
    strips DDP's `module.`); errors name the file and the key."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights {path}: file does not exist")
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:  # truncated, not a tensor file, pickled objects beyond tensors
        raise ValueError(f"model.weights {path}: not a readable weights file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.weights {path}: not a state dict of tensors")
    return state


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a timm state dict into `model` strictly (every key and shape), its classifier left out."""
    path = Path(path)
    state = read_state_dict(path)
    mismatch = key_mismatch(model, state)
    if mismatch:  # maybe another release's key names: the architecture's own converter, as timm applies it
        converted = convert_state_dict(model, state)
        if converted is not None and not key_mismatch(model, converted):
            state, mismatch = converted, ""
    if mismatch:
        name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        raise ValueError(f"model.weights {path}: not a state dict of {name} ({mismatch})")
    model.load_state_dict(without_classifier(model, state), strict=True)


def without_classifier(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` minus the classifier's weights that `model` (built with num_classes=0) has no place for."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    prefixes = tuple(f"{n}." for n in ([names] if isinstance(names, str) else names))
    own = model.state_dict()
    return {k: v for k, v in state.items() if k in own or not k.startswith(prefixes)}


def key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """'' when `state` fits `model` key for key and shape for shape, else what differs, first keys named."""
    own, state = model.state_dict(), without_classifier(model, state)
    missing = [k for k in own if k not in state]
    unexpected = sorted(k for k in state if k not in own)
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    parts = [f"{label}: {len(keys)} ({', '.join(keys[:SHOWN_KEYS])}{', ...' * (len(keys) > SHOWN_KEYS)})"
             for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("wrong shapes", shapes)) if keys]
    return "; ".join(parts)


def convert_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """`state` through the `checkpoint_filter_fn` of the model's timm module (None if it has none or fails)."""
    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if convert is None:
        return None
    try:
        return convert(dict(state), model)
    except Exception:  # a converter meant for other files: the strict check reports the original keys
        return None
