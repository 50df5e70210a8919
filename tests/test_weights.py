"""Pretrained weights as timm users expect them: a local state dict loads strictly, a hub tag reads the Hugging
Face cache offline, the input normalisation is the backbone's own, and every failure is one line naming the key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cvgl.config import check_model
from cvgl.models import CrossViewModel, Encoder
from cvgl.weights import create_backbone

MODEL = {"backbone": "convnext_atto", "head": "gem", "dim": 16, "ground_size": [32, 64], "satellite_size": [32, 32]}
TAG = "convnext_atto.d2_in1k"  # its pretrained config names the hub repo timm/convnext_atto.d2_in1k


def reference_state(name: str = "convnext_atto", classifier: bool = True, seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict in timm's layout, with random values that no fresh model reproduces."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=1000 if classifier else 0)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def assert_backbone_holds(backbone: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
@pytest.mark.parametrize("classifier", [True, False])
def test_a_weights_file_loads_every_tensor_with_or_without_its_classifier(tmp_path: Path, suffix: str,
                                                                           classifier: bool) -> None:
    state = reference_state(classifier=classifier)
    path = save_weights(state, tmp_path / f"convnext_atto{suffix}")
    model = CrossViewModel({**MODEL, "weights": str(path)})
    for encoder in (model.ground, model.satellite):  # both encoders start from the file
        assert_backbone_holds(encoder.backbone, state)


def test_a_weights_file_wrapped_like_a_training_checkpoint_loads(tmp_path: Path) -> None:
    state = reference_state()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    assert_backbone_holds(create_backbone("convnext_atto", weights=path), state)


def facebook_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ConvNeXt state dict in the key layout of Facebook's original release (convnext_*_22k_1k_384.pth,
    the file the paper loads): what timm's own converter maps back."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^stem\.", "downsample_layers.0.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        key = key.replace("head.fc.", "head.").replace("head.norm.", "norm.")
        if "pwconv" in key and key.endswith("weight") and value.ndim == 4:  # linear layers there, 1x1 convs here
            value = value.flatten(1)
        out[key] = value
    return out


def test_facebooks_original_convnext_layout_loads_through_timms_converter(tmp_path: Path) -> None:
    state = reference_state()
    fb = facebook_layout(state)
    assert "downsample_layers.0.0.weight" in fb and "stem.0.weight" not in fb
    path = tmp_path / "convnext_atto_1k.pth"
    torch.save({"model": fb}, path)  # as the release wraps it
    assert_backbone_holds(create_backbone("convnext_atto", weights=path), state)


def test_a_file_of_another_architecture_names_the_key_and_the_first_mismatching_keys(tmp_path: Path) -> None:
    path = save_weights(reference_state("resnet18"), tmp_path / "resnet18.safetensors")
    with pytest.raises(ValueError) as err:
        create_backbone("convnext_atto", weights=path)
    message = str(err.value)
    assert message.startswith(f"model.weights {path}: not a state dict of convnext_atto")
    assert "missing keys: " in message and "stem.0.weight" in message
    assert "unexpected keys: " in message and "bn1.bias" in message  # resnet18's, sorted
    assert "\n" not in message


def test_a_wider_model_of_the_same_family_is_a_shape_error(tmp_path: Path) -> None:
    path = save_weights(reference_state("convnext_femto"), tmp_path / "femto.pth")
    with pytest.raises(ValueError, match=r"not a state dict of convnext_atto \(.*wrong shapes: \d+ \(stem.0.weight"):
        create_backbone("convnext_atto", weights=path)


def test_a_truncated_weights_file_is_named(tmp_path: Path) -> None:
    path = save_weights(reference_state(), tmp_path / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"model.weights {path}: not a readable weights file"):
        create_backbone("convnext_atto", weights=path)


def test_normalisation_is_the_backbones_own_and_checkpoints_record_it() -> None:
    clip_like = Encoder("test_convnext.r160_in1k", (32, 32))  # timm's config: mean = std = 0.5
    imagenet = Encoder("convnext_atto", (32, 32))
    assert clip_like.mean.flatten().tolist() == [0.5, 0.5, 0.5] == clip_like.std.flatten().tolist()
    torch.testing.assert_close(imagenet.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert {"mean", "std"} <= set(clip_like.state_dict())


def populate_hub_cache(hf_home: Path, state: dict[str, torch.Tensor], tag: str = TAG) -> Path:
    """The Hugging Face cache layout that `hf_hub_download` reads offline: refs/main -> snapshots/<commit>/."""
    repo = hf_home / "hub" / f"models--timm--{tag}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return save_weights(state, repo / "snapshots" / commit / "model.safetensors")


def offline_env(hf_home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


def test_a_pretrained_tag_is_read_from_the_hub_cache_offline(tmp_path: Path) -> None:
    state = reference_state(seed=7)
    populate_hub_cache(tmp_path / "hf", state)
    torch.save(state, tmp_path / "expected.pt")
    # A fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported.
    script = (
        "import sys, torch\n"
        "from cvgl.config import check_model\n"
        "from cvgl.weights import create_backbone\n"
        f"model = {{'backbone': '{TAG}', 'pretrained': True, 'head': 'gem', 'ground_size': [32, 64],"
        " 'satellite_size': [32, 32]}\n"
        "check_model(model)\n"
        f"backbone = create_backbone('{TAG}', pretrained=True)\n"
        f"expected = torch.load(r'{tmp_path / 'expected.pt'}')\n"
        "bad = [k for k, v in backbone.state_dict().items() if not torch.equal(v, expected[k])]\n"
        "print('mismatch', bad) if bad else print('loaded from the cache')\n")
    proc = subprocess.run([sys.executable, "-c", script], env=offline_env(tmp_path / "hf"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded from the cache" in proc.stdout


def test_an_uncached_tag_offline_is_one_line_naming_the_tag_and_both_remedies(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    proc = subprocess.run([sys.executable, "-m", "cvgl", "fetch-weights", TAG], env=offline_env(tmp_path / "hf"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"model.backbone {TAG}: model.pretrained is true but its weights are not in the Hugging Face" in lines[0]
    assert "HF_HUB_OFFLINE=1" in lines[0]
    assert f"cvgl fetch-weights {TAG}" in lines[0] and "model.weights: <file>" in lines[0]


def test_the_config_check_knows_timm_names_tags_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model.backbone 'convnext_atoo': timm has no such model .did you mean "
                                         "convnext_atto"):
        check_model({**MODEL, "backbone": "convnext_atoo"})
    with pytest.raises(ValueError, match=r"model.backbone 'convnext_atto.foo': timm has no such pretrained tag "
                                         r"\(known: convnext_atto.d2_in1k\)"):
        check_model({**MODEL, "backbone": "convnext_atto.foo"})
    with pytest.raises(ValueError, match="a 16x16 input is too small"):
        check_model({**MODEL, "satellite_size": [16, 16]})
    with pytest.raises(ValueError, match="model.shared with model.head safa"):
        check_model({**MODEL, "shared": True, "head": "safa"})
    with pytest.raises(FileNotFoundError, match="model.weights: /nonexistent.pth does not exist"):
        check_model({**MODEL, "weights": "/nonexistent.pth"})
    check_model({**MODEL, "weights": "/nonexistent.pth"}, pretrained=False)  # a stage resuming from a checkpoint
