"""Training across processes is the single-process training: same global batch, same loss, same weights.

Two CPU processes (gloo) stand in for two GPUs: each encodes its rows of the global batch, the contrastive loss
sees the gathered batch, BatchNorm sees global statistics and DDP averages gradients (cvgl.distributed).

The exact comparison runs in float64. In float32 the two runs differ by rounding (sums in another order), and
AdamW turns rounding noise in a near-zero gradient (GeM's p gets ~1e-7) into a full learning-rate step, so after a
few steps float32 weights agree only loosely although the gradients agree to ~1e-6.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing as mp

import cvgl.train as train
from cvgl import augment, pipeline
from cvgl.distributed import shard, training_network
from cvgl.io import write_image_cache
from cvgl.train import build_model, fit, intra_view_stage, resolve, round_stage

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
N = 10  # 10 pairs in batches of 5: the two ranks hold 3 and 2 rows (uneven shards)
CFG: dict[str, Any] = {
    "seed": 0, "device": "cpu", "threads": 1, "precision": "auto",
    "model": {"backbone": "convnext_atto", "head": "gem", "dim": 16, "ground_size": [32, 64],
              "satellite_size": [32, 32], "satellite_mask_radius": 0.5},
    "optim": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 5},
    "augment": {}, "stage": {"epochs": 1, "smoothing": 0.1, "labeled_ratio": 0.4, "rounds": 2},
}


def images(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """Models, augmentations and images in float64 (in this process; spawned ranks enter it themselves)."""
    dtype, unit_images = torch.get_default_dtype(), train.unit_images
    torch.set_default_dtype(torch.float64)
    train.unit_images = lambda x: augment.unit_images(x).double()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        train.unit_images = unit_images


def train_stages(out: Path, cfg: dict[str, Any] = CFG) -> dict[str, dict[str, Any]]:
    """Intra-view (both views of a batch through each encoder) and a pseudo-pair round (labeled and
    unlabeled-as-negative rows; the cross-view loss), as the pipeline runs them: the same code in one process
    or in each of several."""
    ground, satellite = images(N, (32, 64), 1), images(N, (32, 32), 2)
    g_ids = np.array([f"g{i}" for i in range(N)], dtype=object)
    s_ids = np.array([f"s{i}" for i in range(N)], dtype=object)
    labels = pd.DataFrame({"ground_id": g_ids, "satellite_id": s_ids[::-1], "kept": np.arange(N) < 6,
                           "source": "pseudo"})
    results = {}
    for name in ("intra", "round"):
        device = resolve(cfg)
        model, optimizer = build_model(cfg, None, device)
        init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        net = training_network(model, device)
        if name == "intra":
            stage = intra_view_stage(net, ground, satellite, cfg, device)
        else:
            stage = round_stage(net, ground, satellite, g_ids, s_ids, labels, cfg, device, 1)
        fetched: list[int] = []
        stage.fetch = counted(stage.fetch, fetched)
        final = fit(model, optimizer, stage, cfg, out / f"{name}.pt")
        results[name] = {"init": init, "model": {k: v.detach().cpu() for k, v in final["model"].items()},
                         "fetched": fetched,
                         "losses": [h["loss"] for h in final["history"]],
                         "steps": [h["steps"] for h in final["history"]],
                         "batchnorm": type(model.ground.proj[0]).__name__}
    return results


def counted(fetch: Any, rows: list[int]) -> Any:
    """`fetch`, recording how many ground and satellite rows each call read from the caches."""
    def wrapped(b: Any) -> Any:
        g, s = fetch(b)
        rows.append(len(g) + len(s))
        return g, s
    return wrapped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out: Path) -> None:
    """One rank, as torchrun would start it: the process group is described by the environment."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    with float64():
        results = train_stages(out / "multi")
    torch.save(results, out / f"rank{rank}.pt")


def assert_same_training(single: dict[str, Any], multi: dict[str, Any], label: str) -> None:
    """Same steps and losses; the same weight updates (trained - initial) up to float64 rounding."""
    assert multi["steps"] == single["steps"], label
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-9, err_msg=label)
    delta = {k: v - single["init"][k] for k, v in single["model"].items() if v.is_floating_point()}
    scale = max(float(d.abs().max()) for d in delta.values())
    assert scale > 0, label
    for key, value in single["model"].items():
        other = multi["model"][key]
        if key not in delta:
            assert torch.equal(other, value), f"{label}: {key}"
            continue
        moved = other - single["init"][key]
        # Against the largest update: rounding stays far below it, a wrong gradient or statistic does not.
        assert torch.allclose(moved, delta[key], rtol=1e-6, atol=1e-8 * scale), \
            f"{label}: {key} moved differently (max {float((moved - delta[key]).abs().max()):.2e}, scale {scale:.2e})"


def test_shards_cover_a_batch_once_in_order() -> None:
    for n in (2, 5, 10, 11):
        parts = [shard(n, 3, r) for r in range(3)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_two_processes_train_exactly_like_one_on_the_same_global_batch(tmp_path: Path) -> None:
    with float64():
        single = train_stages(tmp_path / "single")
    mp.spawn(_rank_main, args=(free_port(), tmp_path), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for name in ("intra", "round"):
        assert_same_training(single[name], ranks[0][name], name)
        for key, value in ranks[0][name]["model"].items():  # every rank holds the same weights
            assert torch.equal(ranks[1][name]["model"][key], value), f"{name}: rank 1 {key}"
        # Each rank read only its share of every batch from the caches: 3 + 2 of 5 rows per view.
        assert single[name]["fetched"] and all(n == 10 for n in single[name]["fetched"]), name
        assert [set(ranks[r][name]["fetched"]) for r in range(WORLD)] == [{6}, {4}], name
        written = torch.load(tmp_path / "multi" / f"{name}.pt", weights_only=False)  # rank 0 wrote it
        assert all(torch.equal(written["model"][k], v) for k, v in ranks[0][name]["model"].items())
    assert not list((tmp_path / "multi").glob("*.state"))


def test_torchrun_launch_of_a_training_stage_trains_on_the_global_batch(tmp_path: Path) -> None:
    """The rules' launch path end to end (float32, AdamW): one model file, one progress report, the loss of the
    global batch (per-process negatives, 3 and 2 per row instead of 5, would give another loss)."""
    cache = tmp_path / "train-ground.npy"
    write_image_cache(images(N, (32, 64), 1), [f"g{i}" for i in range(N)], cache)
    cfg = dict(CFG, stage={"epochs": 1, "smoothing": 0.3})
    pipeline.cross_view_train(cfg, None, cache, None, tmp_path / "single.pt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           "-m", "cvgl", "cross-view", "--config", json.dumps(cfg), "--ground-cache", str(cache),
           "--out", str(tmp_path / "multi.pt")]
    done = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("[cross-view] epoch 1/1") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.glob("*.pt*")) == ["multi.pt", "single.pt"]  # no .state left
    single = torch.load(tmp_path / "single.pt", weights_only=False)["history"]
    multi = torch.load(tmp_path / "multi.pt", weights_only=False)["history"]
    assert [h["steps"] for h in multi] == [h["steps"] for h in single] == [N // 5]
    # Two steps: the second follows one AdamW step, which float32 rounding perturbs slightly (module docstring).
    np.testing.assert_allclose(multi[0]["loss"], single[0]["loss"], rtol=1e-3)
