"""Training across processes with torch.distributed: one process per GPU (or several CPU processes with gloo).

`torchrun --standalone --nproc_per_node N -m cvgl <stage> ...` (what the training rules run when `processes` > 1)
starts N copies of a training stage. Each joins the process group here (nccl on CUDA, gloo on CPU) and the N
processes train as one job on the single-process run's global batch:

- every rank draws the same batch plan from the stage's seeded generator, reads only its own rows of each batch
  from the caches (`local_share`) and augments them with the draws made for the whole global batch
  (`cvgl.augment.RowDraws`): its inputs are exactly its rows' inputs in one process;
- each rank encodes its rows; the embeddings are gathered with gradients (`gather_rows`) and every rank computes
  the contrastive loss over the global batch, so the negatives do not depend on the number of GPUs (the official
  code's per-GPU negatives are docs/method.md §9.8);
- BatchNorm layers normalise with global-batch statistics: SyncBatchNorm on CUDA; on CPU, where SyncBatchNorm
  refuses gloo, `GlobalBatchNorm` normalises the gathered features;
- DistributedDataParallel averages the gradients.

Why the gradient is the single-process one: every rank computes the same global loss L. The backward of the
all-gather sums what the N ranks send back for a rank's rows, so rank r's parameters receive N * dL/dθ through
its own rows; DDP's average over ranks gives (1/N) * Σ_r N * dL/dθ|_r = dL/dθ. The logit scale, used by the loss
but never gathered, receives dL/dt on every rank, which also averages to dL/dt. Batch statistics follow the same
argument (both BatchNorm paths back-propagate through the global mean and variance).

Only rank 0 writes checkpoints and prints progress; every rank resumes from the same `.state` file. Pseudo labels
(mutual matching, margins) are not computed here: they are a separate rule run once, by one process, on the
previous round's embeddings, never once per rank (the official code's redundant per-rank matching,
docs/method.md §9.13).
"""

from __future__ import annotations

import atexit
import os
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from cvgl.models import autocast


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the process that writes files and prints (rank 0; the only process of a plain run)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def init_from_env(device: torch.device, threads: int) -> torch.device:
    """Join the process group torchrun describes in the environment; returns the device this rank trains on.

    A plain `cvgl <stage>` (no WORLD_SIZE > 1) is one process: the device comes back unchanged. Under torchrun,
    CUDA ranks take GPU LOCAL_RANK and the job's `threads` are shared among the ranks.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"processes: rank with LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} "
                               f"visible); use at most one process per GPU")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_group)
    torch.set_num_threads(max(1, threads // world))
    return device


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, world: int, index: int) -> slice:
    """Rank `index`'s rows of a global batch of n: contiguous, sizes differ by at most one (like np.array_split)."""
    base, extra = divmod(n, world)
    start = index * base + min(index, extra)
    return slice(start, start + base + (index < extra))


def local_share(n: int) -> slice:
    """This rank's rows of a global batch of n (all of them in one process)."""
    return shard(n, world_size(), rank())


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order; gradients flow back to the rank that owns each row."""
    return _gather_with_slice(x)[0]


def _gather_with_slice(x: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """`gather_rows` and where this rank's rows sit in the result. Ranks may hold different numbers of rows
    (a global batch not divisible by the world size): rows are padded to the largest count, then trimmed."""
    world = world_size()
    if world == 1:
        return x, slice(0, len(x))
    counts = _row_counts(len(x), x.device)
    pad = max(counts) - len(x)
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    with warnings.catch_warnings():
        # Deprecated in favour of a private functional API; it is still torch's public all-gather with autograd.
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(padded)
    start = sum(counts[:rank()])
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]), slice(start, start + len(x))


def _row_counts(n: int, device: torch.device) -> list[int]:
    mine = torch.tensor([n], device=device)
    counts = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(counts, mine)
    return [int(c) for c in counts]


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch on any backend: the features of every rank are gathered (with gradients),
    normalised together and each rank keeps its rows. Running statistics are then the single-process ones.

    Used on CPU/gloo, where SyncBatchNorm refuses to run; the same parameters and buffers as the layer it
    replaces, so checkpoints do not change.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)
        rows, mine = _gather_with_slice(input)
        return super().forward(rows)[mine]


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm of `module` use global-batch statistics (in place; the same Parameter objects, so an
    optimiser built before still holds them). CUDA: torch's SyncBatchNorm (it exchanges statistics, not features)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, global_batchnorm(child, device))
    return module


def training_network(model: nn.Module, device: torch.device) -> nn.Module:
    """What a stage runs its forward passes through: the model itself in one process; across processes, the model
    with global BatchNorm wrapped in DDP (rank 0's weights are broadcast to all ranks).

    Checkpoints keep coming from `model` itself (no `module.` prefixes). Unused parameters (a timm backbone's
    classifier norm) are allowed, as in the official code; DDP leaves their gradients None on every rank.
    """
    if world_size() == 1:
        return model
    global_batchnorm(model, device)
    if rank() > 0:  # stochastic depth draws from the global generator: independent masks on every rank
        torch.manual_seed((torch.initial_seed() * 1_000_003 + rank()) % (1 << 63))
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def encode_global(net: nn.Module, ground: torch.Tensor, satellite: torch.Tensor, dtype: torch.dtype | None,
                  views: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embeddings of a global batch, each rank holding its share (`local_share`) of the (ground, satellite)
    images, and the log logit scale: each rank encodes its rows (under autocast for `dtype`) and the global
    batch is gathered in fp32 for the loss.

    With `views` > 1 a rank's images are `views` equal blocks (the same rows under different augmentations,
    concatenated): the gathered rows are put in view-major order, view 1 of every rank's rows, then view 2...,
    i.e. the order of one process concatenating the views of the whole batch.
    """
    with autocast(ground.device, dtype):
        g, s, scale = net(ground, satellite)
    return (view_major(gather_rows(_full_precision(g)), len(ground), views),
            view_major(gather_rows(_full_precision(s)), len(satellite), views), _full_precision(scale))


def view_major(rows: torch.Tensor, local: int, views: int) -> torch.Tensor:
    """Gathered rows [rank 0: view 1..V | rank 1: view 1..V | ...] reordered to [view 1: ranks 0..R | ...]."""
    if views == 1 or world_size() == 1:
        return rows
    counts = [c // views for c in _row_counts(local, rows.device)]
    starts = [sum(counts[:r]) * views for r in range(len(counts))]
    order = [start + v * c + i for v in range(views) for start, c in zip(starts, counts, strict=True)
             for i in range(c)]
    return rows[torch.tensor(order, device=rows.device)]


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """fp32 for the loss, whatever autocast produced (a float64 model, as in the tests, stays float64)."""
    return x if x.dtype == torch.float64 else x.float()
