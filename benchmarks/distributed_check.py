"""Device checks of multi-process training and bf16 (issue 6, "Devices"); run by hand, prints one JSON line each.

exact      N ranks train the intra-view stage and a pseudo-pair round in float64 next to one process on the same
           global batch; reports the loss of both and the largest difference of the weight updates (trained -
           initial) against the largest update. With at least N GPUs the ranks use NCCL, one GPU each, and
           SyncBatchNorm: the production path. With fewer (or on the CPU) all ranks share device 0 over gloo
           (on CUDA still SyncBatchNorm, which accepts gloo; NCCL refuses two ranks on one GPU).
precision  fp32 vs bf16 autocast: a cross-view epoch of a convnext_tiny at 128x512 / 128x128 (seconds, peak
           memory, loss) and the agreement (mean cosine) of fp32 and bf16 embeddings of the same model.

    python benchmarks/distributed_check.py exact precision [--device cuda] [--ranks 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cvgl.embed import embed_images
from cvgl.models import autocast_dtype, resolve_device
from cvgl.train import build_model, cross_view_stage, fit, setup_torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The check is the test's, with the device as a parameter: one setup, one float64 context.
from tests.test_distributed import CFG, float64, images, train_stages  # noqa: E402


def tiny_config(device: str) -> dict[str, Any]:
    """The test's tiny two-stage setup (tests/test_distributed.py), on `device`."""
    return dict(CFG, device=device)


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def rank_main(rank: int, ranks: int, port: int, device: str, out: Path) -> None:
    """One rank as torchrun would start it; ranks sharing one GPU join a gloo group first."""
    shared = device == "cuda" and torch.cuda.device_count() < ranks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(ranks),
                      LOCAL_RANK="0" if shared else str(rank))
    if shared:
        dist.init_process_group("gloo")
    with float64():
        results = train_stages(out / "multi", tiny_config(device))
    results["backend"] = dist.get_backend()
    torch.save(results, out / f"rank{rank}.pt")


def check_exact(device: str, ranks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        with float64():
            single = train_stages(out / "single", tiny_config(device))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(rank_main, args=(ranks, port, device, out), nprocs=ranks, join=True)
        multi = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(ranks)]
    for name in ("intra", "round"):
        one, many = single[name], multi[0][name]
        scale = worst = 0.0
        for key, value in one["model"].items():
            if value.is_floating_point():
                update = value - one["init"][key]
                scale = max(scale, float(update.abs().max()))
                worst = max(worst, float(((many["model"][key] - many["init"][key]) - update).abs().max()))
        identical = all(torch.equal(m[name]["model"][k], v) for m in multi[1:] for k, v in many["model"].items())
        report(check="exact", stage=name, device=device, ranks=ranks, backend=multi[0]["backend"],
               batchnorm=many["batchnorm"], loss_one_process=one["losses"], loss_ranks=many["losses"],
               max_update_difference=worst, largest_update=scale, ranks_identical=identical)


def check_precision(device: str) -> None:
    dev = resolve_device(device)
    cfg = dict(tiny_config(device), model={"backbone": "convnext_tiny", "head": "gem", "dim": 256,
                                           "ground_size": [128, 512], "satellite_size": [128, 128]},
               optim={"lr": 1e-4, "weight_decay": 0.01, "batch_size": 64}, stage={"epochs": 1, "smoothing": 0.3})
    ground, satellite = images(64 * 8, (128, 512), 3), images(64 * 8, (128, 128), 4)
    with tempfile.TemporaryDirectory() as tmp:
        for run, precision in enumerate(("fp32", "bf16", "fp32", "bf16")):  # the first pair warms up
            c = dict(cfg, precision=precision)
            setup_torch(4, 0)
            model, optimizer = build_model(c, None, dev)
            stage = cross_view_stage(model, ground, satellite, c, dev, 0)
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            final = fit(model, optimizer, stage, c, Path(tmp) / f"{run}.pt")
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
            e32 = embed_images(model, ground[:128], "ground", 64, dev)
            e16 = embed_images(model, ground[:128], "ground", 64, dev, dtype=autocast_dtype("bf16", dev))
            report(check="precision", device=str(dev), precision=precision, warm_up=run < 2,
                   steps=final["history"][0]["steps"], seconds=round(seconds, 2), peak_memory_gib=round(peak, 2),
                   loss=final["history"][0]["loss"], embedding_cosine_fp32_bf16=float((e32 * e16).sum(1).mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", choices=["exact", "precision"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    report(torch=torch.__version__, device=args.device,
           gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           gpus=torch.cuda.device_count())
    for check in args.checks:
        if check == "exact":
            check_exact(args.device, args.ranks)
        else:
            check_precision(args.device)


if __name__ == "__main__":
    main()
