"""ViT-family backbones: patch tokens pooled on their grid, panoramas at their own aspect ratio, freezing that
leaves the backbone untouched, resume, DDP and offline hub weights, with timm's tiny random-init `test_vit`
(6 blocks, 64 channels, 16 px patches; no weights needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

import cvgl.train as train
from cvgl.config import check_model
from cvgl.embed import embed_images
from cvgl.models import CrossViewModel, Encoder, token_grid
from cvgl.pipeline import cross_view_train
from cvgl.train import build_model, cross_view_stage, fit, model_from_checkpoint, setup_torch
from tests.dag import REPO, scheduled_rules, snakemake
from tests.test_distributed import assert_same_training, float64, free_port, train_stages
from tests.test_weights import offline_env, populate_hub_cache, reference_state, save_weights

VIT = "test_vit"
TAG = "test_vit.r160_in1k"  # hub repo timm/test_vit.r160_in1k, 160 px: a 10x10 grid of position embeddings
MODEL = {"backbone": VIT, "head": "gem", "dim": 16, "ground_size": [32, 128], "satellite_size": [32, 32]}
CFG: dict[str, Any] = {
    "seed": 0, "device": "cpu", "threads": 1,
    "model": MODEL, "optim": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 4},
    "augment": {}, "stage": {"epochs": 2, "smoothing": 0.3},
}


def images(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def tokens_of(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    """The backbone's (B, 1 + h*w, C) tokens for images in [0, 1], computed outside the encoder."""
    return encoder.backbone.forward_features((x - encoder.mean) / encoder.std)


def train_fit(cfg: dict[str, Any], out: Path) -> tuple[CrossViewModel, torch.optim.Optimizer, dict[str, Any]]:
    setup_torch(1, cfg["seed"])
    model, opt = build_model(cfg, None, torch.device("cpu"))
    stage = cross_view_stage(model, images(8, (32, 128), 1), images(8, (32, 32), 2), cfg, torch.device("cpu"), 0)
    return model, opt, fit(model, opt, stage, cfg, out)


def test_patch_tokens_lie_on_their_grid_row_by_row() -> None:
    b, prefix, (h, w), c = 2, 5, (3, 4), 6  # DINOv2-reg4-like: a class token and 4 registers first
    tokens = torch.randn(b, prefix + h * w, c)
    grid = token_grid(tokens, prefix, (h, w))
    assert grid.shape == (b, c, h, w)
    for i in range(h):
        for j in range(w):
            assert torch.equal(grid[:, :, i, j], tokens[:, prefix + i * w + j])
    with pytest.raises(ValueError, match="are not 5 prefix tokens and a 3x3 patch grid"):
        token_grid(tokens, prefix, (3, 3))


@pytest.mark.parametrize("head", ["cls", "avg", "gem", "safa"])
def test_each_head_pools_the_patch_tokens_as_computed_by_hand(head: str) -> None:
    torch.manual_seed(0)
    enc = Encoder(VIT, (32, 128), head=head).eval()  # dim None: BatchNorm neck only
    x = torch.rand(3, 3, 32, 128)
    with torch.no_grad():
        t = tokens_of(enc, x)  # (3, 1 + 2*8, 64)
        patches = t[:, 1:]  # the 16 patch tokens, row by row
        if head == "cls":
            pooled = t[:, 0]
        elif head == "avg":
            pooled = patches.mean(dim=1)
        elif head == "gem":
            p = float(enc.head.p)
            pooled = patches.clamp(min=1e-6).pow(p).mean(dim=1).pow(1 / p)
        else:  # SAFA on the 2x8 grid: spatial maps from the channel-wise max of each token, weighted sums
            m = patches.amax(dim=2)  # (B, 16)
            a = torch.einsum("bh,khd->kbd", m, enc.head.w1) + enc.head.b1
            a = torch.einsum("kbd,kdh->kbh", a, enc.head.w2) + enc.head.b2
            pooled = torch.einsum("bhc,kbh->bkc", patches, a).reshape(3, -1)
        expected = F.normalize(enc.proj(pooled), dim=-1)
        got = enc(x)
    assert got.shape == (3, 64 * 8 if head == "safa" else 64) == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # A fresh BatchNorm (eval) only scales by 1/sqrt(1 + eps): the embedding is the pooled tokens' direction.
    torch.testing.assert_close(got, F.normalize(pooled, dim=-1), rtol=1e-4, atol=1e-5)


def test_a_panorama_keeps_its_aspect_ratio_and_a_shared_vit_also_takes_tiles() -> None:
    torch.manual_seed(0)
    model = CrossViewModel({**MODEL, "ground_size": [32, 128], "head": "avg"}).eval()
    ground = model.ground.backbone
    assert ground.patch_embed.grid_size == (2, 8)  # a 1:4 panorama is a 2x8 patch grid, not squashed
    assert ground.pos_embed.shape == (1, 1 + 16, 64)  # position embeddings built for that grid
    assert model.satellite.backbone.patch_embed.grid_size == (2, 2)
    pano = torch.rand(2, 3, 32, 128)
    with torch.no_grad():
        assert model.ground.features(pano).shape == (2, 64, 2, 8)
        rolled = model.encode(pano.roll(64, dims=-1), "ground")
        assert not torch.allclose(rolled, model.encode(pano, "ground"))  # positions matter along the panorama
    shared = CrossViewModel({**MODEL, "shared": True}).eval()
    with torch.no_grad():  # one encoder built for 32x128 takes 32x32 tiles (timm's dynamic image size)
        assert shared.satellite.features(torch.rand(2, 3, 32, 32)).shape == (2, 64, 2, 2)
        assert shared.encode(torch.rand(2, 3, 32, 32), "satellite").shape == (2, 16)


@pytest.mark.parametrize("freeze", ["backbone", "last-2"])
def test_a_frozen_backbone_is_bit_identical_after_training_and_absent_from_the_optimiser(
        tmp_path: Path, freeze: str) -> None:
    cfg = {**CFG, "model": {**MODEL, "freeze": freeze, "drop_path": 0.1}}
    setup_torch(1, 0)
    before = {k: v.clone() for k, v in build_model(cfg, None, torch.device("cpu"))[0].state_dict().items()}
    model, opt, final = train_fit(cfg, tmp_path / "model.pt")
    assert [h["steps"] for h in final["history"]] == [2, 2]
    frozen_prefixes = ("backbone.",) if freeze == "backbone" else (
        "backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.",
        *(f"backbone.blocks.{i}." for i in range(4)))
    for key, value in final["model"].items():
        if key.partition(".")[2].startswith(frozen_prefixes):
            assert torch.equal(value, before[key]), key
    changed = {k for k, v in final["model"].items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"ground.proj.0.weight", "satellite.proj.1.weight", "logit_scale"} <= changed  # the neck trains
    if freeze == "last-2":  # the last two blocks and the final norm train
        assert {"ground.backbone.blocks.5.mlp.fc2.weight", "ground.backbone.blocks.4.attn.qkv.weight",
                "ground.backbone.norm.weight"} <= changed
        assert not any(".blocks.3." in k or "patch_embed" in k for k in changed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    held = [p for group in opt.param_groups for p in group["params"]]
    assert len(held) == len(trainable) and {id(p) for p in held} == {id(p) for p in trainable}
    assert len(final["optimizer"]["state"]) == len(trainable)  # no moments for what is frozen
    assert len(trainable) < len(list(model.parameters()))
    model.train()  # frozen parts stay in eval mode (no stochastic depth); trainable blocks train
    blocks = model.ground.backbone.blocks
    assert not model.ground.backbone.patch_embed.training and not blocks[0].training
    assert blocks[-1].training == (freeze == "last-2") and model.ground.proj.training


def test_an_interrupted_frozen_vit_run_resumes_and_its_checkpoint_embeds_identically(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {**CFG, "model": {**MODEL, "freeze": "last-1"}}
    model, _, reference = train_fit(cfg, tmp_path / "ref.pt")
    real_epoch = train.run_epoch

    def crash_in_second_epoch(model, optimizer, stage, cfg, epoch):  # noqa: ANN001, ANN202
        if epoch == 1 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise KeyboardInterrupt("killed")
        return real_epoch(model, optimizer, stage, cfg, epoch)

    monkeypatch.setattr(train, "run_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_fit(cfg, tmp_path / "model.pt")
    _, _, resumed = train_fit(cfg, tmp_path / "model.pt")  # the optimiser state of the trainable part loads
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for k, v in reference["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    loaded, _ = model_from_checkpoint(tmp_path / "model.pt", torch.device("cpu"))
    for view, hw in (("ground", (32, 128)), ("satellite", (32, 32))):
        pixels = images(5, hw, 3)
        np.testing.assert_array_equal(embed_images(loaded, pixels, view, 2, torch.device("cpu")),
                                      embed_images(model, pixels, view, 2, torch.device("cpu")))


def test_bf16_autocast_embeds_a_vit_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = CrossViewModel({**MODEL, "head": "safa"})
    pixels = images(4, (32, 128), 5)
    fp32 = embed_images(model, pixels, "ground", 4, torch.device("cpu"))
    bf16 = embed_images(model, pixels, "ground", 4, torch.device("cpu"), dtype=torch.bfloat16)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    assert (np.sum(bf16 * fp32, axis=1) > 0.99).all()


def test_the_config_check_names_bad_freeze_heads_and_patch_sizes() -> None:
    check_model({**MODEL, "freeze": "last-6", "head": "cls"})
    cases = [
        ({"freeze": "last-7"}, r"model.freeze last-7: test_vit has only 6 blocks \(k at most 6"),
        ({"freeze": "top-2"}, r"model.freeze 'top-2': expected none, backbone or last-<k>"),
        ({"ground_size": [32, 120]}, r"model.backbone test_vit: a 32x120 input is not a whole number of its "
                                     r"16x16 patches"),
        ({"backbone": "convnext_atto", "freeze": "last-1"}, r"model.freeze last-1: convnext_atto has no "
                                                            r"transformer blocks"),
        ({"backbone": "convnext_atto", "head": "cls"}, r"model.head cls: convnext_atto has no class token"),
        ({"head": "max"}, r"model.head must be one of gem, avg, safa, cls"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            check_model({**MODEL, **change})


def test_a_vit_weights_file_loads_with_its_position_embeddings_resampled_to_the_panorama_grid(
        tmp_path: Path) -> None:
    state = reference_state(VIT, seed=3)  # timm's layout at 160 px, with its classifier
    path = save_weights(state, tmp_path / "test_vit.safetensors")
    model = CrossViewModel({**MODEL, "weights": str(path)})
    for encoder, grid in ((model.ground, (2, 8)), (model.satellite, (2, 2))):
        own = encoder.backbone.state_dict()
        for key, value in own.items():
            if key != "pos_embed":
                assert torch.equal(value, state[key]), key
        torch.testing.assert_close(own["pos_embed"], resample_abs_pos_embed(state["pos_embed"], grid, (10, 10)))


def test_a_vit_tag_is_read_from_the_hub_cache_offline(tmp_path: Path) -> None:
    state = reference_state(VIT, seed=7)
    populate_hub_cache(tmp_path / "hf", state, TAG)
    expected = dict(state, pos_embed=resample_abs_pos_embed(state["pos_embed"], (2, 8), (10, 10)))
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import torch\n"
        "from cvgl.config import check_model\n"
        "from cvgl.models import CrossViewModel\n"
        f"cfg = {{'backbone': '{TAG}', 'pretrained': True, 'head': 'cls', 'ground_size': [32, 128],"
        " 'satellite_size': [32, 32]}\n"
        "check_model(cfg)\n"
        "backbone = CrossViewModel(cfg).ground.backbone\n"
        f"expected = torch.load(r'{tmp_path / 'expected.pt'}')\n"
        "bad = [k for k, v in backbone.state_dict().items() if not torch.allclose(v, expected[k])]\n"
        "print('mismatch', bad) if bad else print('loaded from the cache')\n")
    proc = subprocess.run([sys.executable, "-c", script], env=offline_env(tmp_path / "hf"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded from the cache" in proc.stdout


def test_without_a_cold_start_round_0_is_the_pretrained_backbone_itself(tmp_path: Path) -> None:
    """The training-free row: both cold-start stages at 0 epochs write the model as built from the weights."""
    from cvgl.io import write_image_cache

    state = reference_state(VIT, seed=5)
    path = save_weights(state, tmp_path / "vit.safetensors")
    cache = tmp_path / "train-ground.npy"
    write_image_cache(images(4, (32, 128), 1), [f"g{i}" for i in range(4)], cache)
    cfg = {**CFG, "model": {**MODEL, "weights": str(path), "head": "cls", "dim": None, "freeze": "backbone"},
           "stage": {"epochs": 0, "smoothing": 0.3}}
    cross_view_train(cfg, None, cache, None, tmp_path / "round-0.pt")
    model, ckpt = model_from_checkpoint(tmp_path / "round-0.pt", torch.device("cpu"))
    assert ckpt["history"] == []
    reference = timm.create_model(VIT, num_classes=0, img_size=(32, 128), dynamic_img_size=True)
    own = {k: v for k, v in state.items() if not k.startswith("head.")}
    reference.load_state_dict(dict(own, pos_embed=resample_abs_pos_embed(state["pos_embed"], (2, 8), (10, 10))))
    pixels = images(3, (32, 128), 9)
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        cls = reference.forward_features((x - 0.5) / 0.5)[:, 0]  # test_vit's pretrained config: mean = std = 0.5
    emb = embed_images(model, pixels, "ground", 3, torch.device("cpu"))
    np.testing.assert_allclose(emb, F.normalize(cls, dim=-1).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["gem", "safa", "cls"])
def test_a_frozen_backbones_stored_features_embed_every_round_as_its_images_do(tmp_path: Path, head: str) -> None:
    """`cvgl features` once, then each round's `cvgl embed --features`: the round's head and neck on the round-0
    backbone's stored features give the image embeddings (float16 storage aside); a trained backbone is refused."""
    from cvgl.io import write_image_cache
    from cvgl.pipeline import embed_stage, features_stage, open_features

    model_cfg = {**MODEL, "head": head, "freeze": "backbone", "satellite_mask_radius": 0.5, "satellite_crop": True}
    if head == "cls":
        model_cfg["dim"] = None
    cfg = {**CFG, "model": model_cfg}
    train_fit(cfg, tmp_path / "round-0.pt")
    round_1, opt = build_model(cfg, tmp_path / "round-0.pt", torch.device("cpu"))  # a round from round 0
    stage = cross_view_stage(round_1, images(8, (32, 128), 5), images(8, (32, 32), 6), cfg, torch.device("cpu"), 0)
    fit(round_1, opt, stage, cfg, tmp_path / "round-1.pt")
    pixels = {"ground": images(6, (32, 128), 11), "satellite": images(6, (32, 32), 12)}
    caches = {}
    for view, imgs in pixels.items():
        caches[view] = tmp_path / f"train-{view}.npy"
        write_image_cache(imgs, [f"{view[0]}{i}" for i in range(6)], caches[view])
    features_stage(tmp_path / "round-0.pt", caches, tmp_path / "features", 4, "cpu", 1, "fp32", symmetries=2)
    assert not list(tmp_path.glob(".features*"))  # the temporary folder was renamed into place
    stored = open_features(tmp_path / "features", round_1, 2)
    assert stored["ground"][1].dtype == np.float16 and stored["ground"][1].shape[:2] == (6, 2)

    embed_stage(tmp_path / "round-1.pt", {}, tmp_path / "from-features", 4, "cpu", 1, "fp32", 2,
                features_dir=tmp_path / "features")
    embed_stage(tmp_path / "round-1.pt", caches, tmp_path / "from-images", 4, "cpu", 1, "fp32", 2)
    embed_stage(tmp_path / "round-0.pt", caches, tmp_path / "round-0-images", 4, "cpu", 1, "fp32", 2)
    from cvgl.embed_io import read_embeddings

    assert not np.allclose(read_embeddings(tmp_path / "round-0-images", "ground")[1],
                           read_embeddings(tmp_path / "from-images", "ground")[1], atol=1e-2)  # the neck trained

    for view in pixels:
        ids_f, cached = read_embeddings(tmp_path / "from-features", view)
        ids_i, direct = read_embeddings(tmp_path / "from-images", view)
        assert list(ids_f) == list(ids_i)
        np.testing.assert_allclose(cached, direct, atol=2e-3)
        assert not np.allclose(direct[:, : direct.shape[1] // 2], direct[:, direct.shape[1] // 2:])  # 2 symmetries

    with pytest.raises(ValueError, match="2 symmetries, 1 asked"):
        open_features(tmp_path / "features", round_1, 1)
    trained = {**cfg, "model": {**model_cfg, "freeze": "none"}}
    train_fit(trained, tmp_path / "tuned.pt")
    with pytest.raises(ValueError, match="features of another backbone"):
        embed_stage(tmp_path / "tuned.pt", {}, tmp_path / "stale", 4, "cpu", 1, "fp32", 2,
                    features_dir=tmp_path / "features")
    with pytest.raises(ValueError, match="is not frozen"):
        features_stage(tmp_path / "tuned.pt", caches, tmp_path / "features-tuned", 4, "cpu", 1, "fp32")
    assert not (tmp_path / "stale").exists() and not (tmp_path / "features-tuned").exists()


def test_the_training_free_config_runs_no_cold_start_training(tmp_path: Path) -> None:
    """No cold-start training, and every round's embedding pools the frozen backbone's features, taken once."""
    proc = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config.yaml"),
                     str(REPO / "tests" / "tiny.yaml"), str(REPO / "configs" / "training-free.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    scheduled = scheduled_rules(out)
    assert {"cross_view", "train_round", "embed", "features"} <= scheduled, out
    assert not {"intra_view", "translate"} & scheduled, out
    embeds = [line for line in out.splitlines() if " embed --model " in line]
    assert len(embeds) == 5 and all("--features results/synth-training-free/features/" in e for e in embeds), embeds
    assert sum(" features --model results/synth-training-free/round-0/model.pt" in line
               for line in out.splitlines()) == 2  # train and test, once for all rounds


DDP_CFG: dict[str, Any] = {
    "seed": 0, "device": "cpu", "threads": 1, "precision": "auto",
    "model": {"backbone": VIT, "head": "gem", "dim": 16, "ground_size": [32, 64], "satellite_size": [32, 32],
              "satellite_mask_radius": 0.5, "freeze": "last-2"},
    "optim": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 5},
    "augment": {}, "stage": {"epochs": 1, "smoothing": 0.1, "labeled_ratio": 0.4, "rounds": 2},
}


def _vit_rank_main(rank: int, port: int, out: Path) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    with float64():
        results = train_stages(out / "multi", DDP_CFG)
    torch.save(results, out / f"rank{rank}.pt")


def test_two_processes_train_a_partly_frozen_vit_exactly_like_one(tmp_path: Path) -> None:
    with float64():
        single = train_stages(tmp_path / "single", DDP_CFG)
    mp.spawn(_vit_rank_main, args=(free_port(), tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name in ("intra", "round"):
        assert_same_training(single[name], ranks[0][name], name)
        for key, value in ranks[0][name]["model"].items():
            assert torch.equal(ranks[1][name]["model"][key], value), f"{name}: rank 1 {key}"
            if ".blocks.0." in key:  # frozen: untouched on every rank
                assert torch.equal(value, single[name]["init"][key]), key
