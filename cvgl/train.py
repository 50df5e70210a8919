"""Training loops: intra-view, cross-view (cold start) and pseudo-pair rounds (docs/method.md §4, §10).

All loops share `fit`: one cosine learning-rate schedule per stage, a checkpoint of the complete state after
every epoch (atomic), and resume from the last complete epoch. Batches and augmentations come from a
generator seeded by (seed, stage, epoch), so a resumed run reproduces an uninterrupted one exactly.
Under torchrun the same loops train across processes on the same global batches, each process reading and
augmenting only its share of a batch (`cvgl.distributed`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvgl.augment import RowDraws, joint_flip_rotate, photometric, random_affine, unit_images
from cvgl.config import with_section_defaults
from cvgl.distributed import barrier, encode_global, init_from_env, is_main, local_share, rank, shard, world_size
from cvgl.io import Progress, StackedRows, atomic_path, reading
from cvgl.losses import info_nce
from cvgl.models import CrossViewModel, autocast_dtype, load_model_state, resolve_device

Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # ground rows, satellite rows, labeled mask


def seeded_generator(seed: int, *keys: object) -> torch.Generator:
    """A torch generator whose state is a pure function of the seed and the keys (stage, epoch, ...)."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, keys)]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


#: Settings that do not change what a stage computes: a run resumed with other values keeps its state.
RESUME_NEUTRAL = ("threads", "data")


def resume_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match for a job to resume from a saved state (`RESUME_NEUTRAL` keys left out)."""
    return {k: v for k, v in settings.items() if k not in RESUME_NEUTRAL}


def config_digest(cfg: dict[str, Any]) -> str:
    """Identity of a stage's settings for resuming (`resume_settings`)."""
    return hashlib.sha256(json.dumps(resume_settings(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def setup_torch(threads: int, seed: int) -> None:
    """Fix threads and seeds so the same config gives the same weights on CPU."""
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def cosine_factor(progress: float) -> float:
    """The per-epoch cosine schedule of docs/method.md §3.4: (1 + cos(pi * progress)) / 2, progress = e / E."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: CrossViewModel, optim_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: what `model.freeze` fixed is neither stepped (no weight decay either)
    nor held in the optimiser's state, so checkpoints carry no moments for it."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=optim_cfg["lr"],
                             weight_decay=optim_cfg["weight_decay"])


#: A batch's images as gathered from the caches: this process's share of its ground and satellite rows, uint8
#: (b, H, W, 3).
Pixels = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Stage:
    """What `fit` needs to know about one training stage.

    `batches` plans an epoch (row indices of global batches, drawn from the seeded generator), `fetch` gathers
    this process's share of a planned batch's pixels (in DataLoader workers, `feed_batches`), `loss` augments
    them on the device and computes the loss of the global batch."""

    name: str
    epochs: int
    lr_factor: Callable[[int], float]  # epoch -> multiplier of the base learning rate
    batches: Callable[[int, torch.Generator], Iterable[Batch]]
    fetch: Callable[[Batch], Pixels]
    loss: Callable[[Batch, Pixels, torch.Generator], torch.Tensor]
    steps_per_epoch: Callable[[int], int]


def gather_rows(ground: np.ndarray, satellite: np.ndarray) -> Callable[[Batch], Pixels]:
    """A stage's `fetch`: this process's share (`local_share`) of a planned batch's rows of two (memory-mapped)
    image arrays, as uint8 tensors. Across N processes each reads 1/N of every batch from disk."""
    world, me = world_size(), rank()  # here, not in the DataLoader workers that call `fetch`

    def fetch(b: Batch) -> Pixels:
        mine = shard(len(b[0]), world, me)
        return torch.from_numpy(np.require(ground[b[0][mine]], requirements=["C", "W"])), \
            torch.from_numpy(np.require(satellite[b[1][mine]], requirements=["C", "W"]))

    return fetch


class PlannedBatches(torch.utils.data.Dataset):
    """An epoch's planned batches as a map-style dataset: item i is batch i's pixels (`Stage.fetch`)."""

    def __init__(self, plans: list[Batch], fetch: Callable[[Batch], Pixels]) -> None:
        self.plans, self.fetch = plans, fetch

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, i: int) -> Pixels:
        return self.fetch(self.plans[i])


def loader_workers(cfg: dict[str, Any], device: torch.device) -> int:
    """`data.workers` (null: 4 worker processes when the job trains on a GPU, none on the CPU, where they would
    take the cores the training uses); workers need fork, so platforms without it gather in the process."""
    import multiprocessing

    workers = (cfg.get("data") or {}).get("workers")
    if workers is None:
        workers = 4 if device.type == "cuda" else 0
    return workers if "fork" in multiprocessing.get_all_start_methods() else 0


def feed_batches(stage: Stage, plans: list[Batch], device: torch.device, workers: int
                 ) -> Iterator[tuple[Batch, Pixels]]:
    """Each planned batch with its pixels on `device`: gathered by DataLoader workers (pinned memory, two batches
    ahead each) while the device trains, or in the process with `workers` 0. The plan, not the loader, fixes
    what a batch holds and in which order, so the result does not depend on `workers`."""
    if workers == 0:
        for plan in plans:
            g, s = stage.fetch(plan)
            yield plan, (g.to(device), s.to(device))
        return
    loader = torch.utils.data.DataLoader(PlannedBatches(plans, stage.fetch), batch_size=None, shuffle=False,
                                         num_workers=min(workers, max(1, len(plans))),
                                         pin_memory=device.type == "cuda", prefetch_factor=2,
                                         multiprocessing_context="fork")
    for plan, (g, s) in zip(plans, loader, strict=True):
        yield plan, (g.to(device, non_blocking=True), s.to(device, non_blocking=True))


#: What every cvgl checkpoint (and `.state` file) holds.
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "config")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint written by `save_checkpoint`; a missing, truncated or foreign file is an error naming it."""
    path = Path(path)
    with reading(path, "cvgl checkpoint"):
        ckpt = torch.load(path, map_location=device, weights_only=False)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a cvgl checkpoint (no {', '.join(missing)})")
    return ckpt


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def build_model(cfg: dict[str, Any], init: str | Path | None, device: torch.device
                ) -> tuple[CrossViewModel, torch.optim.Optimizer]:
    """A model and optimiser: from the backbone's pretrained weights (`model.weights`, `model.pretrained`) or
    random, or continuing from the checkpoint `init` (then no pretrained weights are read: it holds every one)."""
    model = CrossViewModel(cfg["model"], load_pretrained=init is None).to(device)
    optimizer = make_optimizer(model, cfg["optim"])
    if init is not None:
        ckpt = load_checkpoint(init, device)
        load_model_state(model, ckpt["model"], init)
        if ckpt.get("optimizer") is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    return model, optimizer


def model_from_checkpoint(path: str | Path, device: torch.device) -> tuple[CrossViewModel, dict[str, Any]]:
    """The model a checkpoint holds, built from the config slice it records, and the checkpoint itself."""
    ckpt = load_checkpoint(path)
    model = CrossViewModel(ckpt["config"]["model"], load_pretrained=False).to(device)
    load_model_state(model, ckpt["model"], path)
    return model, ckpt


def fit(model: CrossViewModel, optimizer: torch.optim.Optimizer, stage: Stage, cfg: dict[str, Any],
        out_path: Path) -> dict[str, Any]:
    """Run a stage's epochs with per-epoch checkpoints; resume from `<out>.state` if it matches the config.

    Across processes every rank reads the same state and only rank 0 writes.
    """
    state_path = out_path.with_name(out_path.name + ".state")
    digest = config_digest(cfg)
    history: list[dict[str, Any]] = []
    start = 0
    if state_path.exists():
        state = load_checkpoint(state_path)
        if state.get("config_digest") == digest:
            load_model_state(model, state["model"], state_path)
            optimizer.load_state_dict(state["optimizer"])
            start, history = state["epoch"], state["history"]
            if is_main():
                print(f"[{stage.name}] resuming after epoch {start}", file=sys.stderr, flush=True)
        elif is_main():
            print(f"[{stage.name}] ignoring {state_path}: made with another config", file=sys.stderr)
    for epoch in range(start, stage.epochs):
        history.append(run_epoch(model, optimizer, stage, cfg, epoch))
        if is_main():
            save_checkpoint(checkpoint_dict(model, optimizer, epoch + 1, cfg, digest, history, stage), state_path)
    final = checkpoint_dict(model, optimizer, stage.epochs, cfg, digest, history, stage)
    if is_main():
        save_checkpoint(final, out_path)
        state_path.unlink(missing_ok=True)
    barrier()  # no rank returns before the model file exists
    return final


def checkpoint_dict(model: CrossViewModel, optimizer: torch.optim.Optimizer, epoch: int, cfg: dict[str, Any],
                    digest: str, history: list[dict[str, Any]], stage: Stage) -> dict[str, Any]:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "stage": stage.name, "config": cfg, "config_digest": digest, "history": history,
            "logit_scale": float(model.logit_scale.detach().exp())}


def run_epoch(model: CrossViewModel, optimizer: torch.optim.Optimizer, stage: Stage, cfg: dict[str, Any],
              epoch: int) -> dict[str, Any]:
    lr = cfg["stage"].get("lr", cfg["optim"]["lr"]) * stage.lr_factor(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    gen = seeded_generator(cfg["seed"], stage.name, epoch)
    model.train()
    t0, losses = time.perf_counter(), []
    progress = Progress(max(1, stage.steps_per_epoch(epoch)), f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
                        step=0.25)
    # The whole epoch is planned first: the plan draws from `gen` before any augmentation does, as it always has.
    plans = list(stage.batches(epoch, gen))
    device = next(model.parameters()).device
    for batch, pixels in feed_batches(stage, plans, device, loader_workers(cfg, device)):
        loss = stage.loss(batch, pixels, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if is_main():
            progress.update(1, f"loss {np.mean(losses[-20:]):.4f}")
    mean = float(np.mean(losses)) if losses else float("nan")
    record = {"epoch": epoch + 1, "lr": lr, "loss": mean, "steps": len(losses),
              "seconds": round(time.perf_counter() - t0, 2), "logit_scale": float(model.logit_scale.detach().exp())}
    if is_main():
        print(f"[{stage.name}] epoch {epoch + 1}/{stage.epochs} loss {mean:.4f} lr {lr:.2e} "
              f"steps {len(losses)} {record['seconds']}s", file=sys.stderr, flush=True)
    return record


def permuted_batches(n: int, batch: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches of size `batch` (drop_last, as the method does)."""
    order = torch.randperm(n, generator=gen).numpy()
    for i in range(0, n - batch + 1, batch):
        yield order[i:i + batch]


def distinct_batches(keys: np.ndarray, batch: int, gen: torch.Generator) -> list[np.ndarray]:
    """Shuffled batches in which no key (satellite row) appears twice (drop_last).

    Two pairs sharing a tile in one batch would each be the other's false negative (VIGOR: a tile is the positive
    of 1-2 panoramas; Sample4Geo's rule). An item whose tile is already in the open batch waits for the next one;
    with all keys distinct this is exactly `permuted_batches`.
    """
    order = torch.randperm(len(keys), generator=gen).numpy()
    if len(np.unique(keys)) == len(keys):
        return [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    pending = deque(order.tolist())
    out: list[np.ndarray] = []
    while pending:
        current: list[int] = []
        seen: set[int] = set()
        deferred: list[int] = []
        while pending and len(current) < batch:
            item = pending.popleft()
            (deferred if int(keys[item]) in seen else current).append(item)
            seen.add(int(keys[item]))
        if len(current) < batch:
            break  # drop_last (also when only repeats of one tile are left)
        out.append(np.array(current))
        pending.extendleft(reversed(deferred))  # they open the next batch
    return out


# ---------------------------------------------------------------------------------------------------------
# Stage 1: intra-view self-supervision


def intra_view_stage(model: CrossViewModel | torch.nn.Module, ground: np.ndarray, satellite: np.ndarray,
                     cfg: dict[str, Any], device: torch.device) -> Stage:
    """Two augmented views of the same image are a positive pair, within each view (docs/method.md §4, stage 1).

    `model` is the model or, across processes, its `cvgl.distributed.training_network`.
    """
    scfg, aug = cfg["stage"], with_section_defaults(cfg.get("augment"), "augment")
    dtype = autocast_dtype(cfg.get("precision", "auto"), device)
    n = max(len(ground), len(satellite))
    batch = min(cfg["optim"]["batch_size"], len(ground), len(satellite))

    def batches(epoch: int, gen: torch.Generator) -> Iterator[Batch]:
        g_order = torch.randperm(n, generator=gen).numpy() % len(ground)
        s_order = torch.randperm(n, generator=gen).numpy() % len(satellite)
        for i in range(0, n - batch + 1, batch):
            yield np.sort(g_order[i:i + batch]), np.sort(s_order[i:i + batch]), None

    def loss(b: Batch, pixels: Pixels, gen: torch.Generator) -> torch.Tensor:
        g, s = unit_images(pixels[0]), unit_images(pixels[1])
        draws = RowDraws(gen, len(b[0]), local_share(len(b[0])))
        flip = draws.rand() < 0.5
        g1 = photometric(torch.where(flip.view(-1, 1, 1, 1).to(device), g.flip(-1), g), draws, aug)
        g2 = photometric(g, draws, aug)
        s1 = photometric(torch.where(flip.view(-1, 1, 1, 1).to(device), s.flip(-1), s), draws, aug)
        a = aug["intra_affine"]
        s2 = photometric(random_affine(s, draws, a["shift"], a["scale"], a["rotate"]), draws, aug)
        eps = scfg["smoothing"]
        # Both views through each encoder in one batch (BatchNorm sees 2B rows, as the method trains).
        ge, se, scale = encode_global(model, torch.cat([g1, g2]), torch.cat([s1, s2]), dtype, views=2)
        k = len(b[0])
        return info_nce(ge[:k], ge[k:], scale, eps) + info_nce(se[:k], se[k:], scale, eps)

    epochs = scfg["epochs"]
    return Stage("intra-view", epochs, lambda e: cosine_factor(e / epochs), batches, gather_rows(ground, satellite),
                 loss, lambda e: n // batch)


# ---------------------------------------------------------------------------------------------------------
# Stage 2 and rounds: cross-view pairs


def cross_view_loss(model: CrossViewModel | torch.nn.Module, cfg: dict[str, Any], device: torch.device
                    ) -> Callable[[Batch, Pixels, torch.Generator], torch.Tensor]:
    """Loss of a batch of (ground row, satellite row, labeled?) with joint flip/rotation and photometric aug.

    Each process augments and encodes its share of the global batch; the loss sees the gathered batch.
    """
    aug, eps = with_section_defaults(cfg.get("augment"), "augment"), cfg["stage"]["smoothing"]
    dtype = autocast_dtype(cfg.get("precision", "auto"), device)

    def loss(b: Batch, pixels: Pixels, gen: torch.Generator) -> torch.Tensor:
        g, s = unit_images(pixels[0]), unit_images(pixels[1])
        draws = RowDraws(gen, len(b[0]), local_share(len(b[0])))
        g, s = joint_flip_rotate(g, s, draws, aug["flip_p"], aug["rotate_p"])
        g, s = photometric(g, draws, aug), photometric(s, draws, aug)
        labeled = None if b[2] is None else torch.from_numpy(b[2])
        ge, se, scale = encode_global(model, g, s, dtype)
        return info_nce(ge, se, scale, eps, labeled)

    return loss


def cross_view_stage(model: CrossViewModel | torch.nn.Module, ground: np.ndarray, fake_satellite: np.ndarray,
                     cfg: dict[str, Any], device: torch.device, offset: int) -> Stage:
    """(panorama i, its translated projection i) are positives: labels the data makes itself (stage 2)."""
    if len(ground) != len(fake_satellite):
        raise ValueError(f"cold start: {len(ground)} panoramas but {len(fake_satellite)} translated images")
    epochs, batch = cfg["stage"]["epochs"], min(cfg["optim"]["batch_size"], len(ground))

    def batches(epoch: int, gen: torch.Generator) -> Iterator[Batch]:
        for idx in permuted_batches(len(ground), batch, gen):
            yield idx, idx, None

    # The method's stage 2 continues stage 1's epoch counter on one cosine over both stages.
    return Stage("cross-view", epochs, lambda e: cosine_factor((offset + e) / (offset + epochs)), batches,
                 gather_rows(ground, fake_satellite), cross_view_loss(model, cfg, device),
                 lambda e: len(ground) // batch)


@dataclass
class EpochPairs:
    """One epoch's pairing of train grounds with train satellites (rows of the image caches)."""

    ground: np.ndarray
    satellite: np.ndarray
    labeled: np.ndarray
    labeled_only: bool


def pseudo_pairs(labels: pd.DataFrame, ground_ids: np.ndarray, satellite_ids: np.ndarray,
                 labeled_ratio: float, gen: torch.Generator) -> EpochPairs:
    """Pair every train ground for one epoch from a label table (docs/method.md §5.3, §10 steps 4-5, bugs fixed).

    Kept rows (pseudo or labeled) are positives. If fewer than `labeled_ratio * N` grounds carry a label,
    only those pairs are used. Otherwise every other ground is paired with a satellite that no kept pair uses,
    drawn without replacement in one index space, and serves only as a negative.
    """
    g_row = {g: i for i, g in enumerate(ground_ids)}
    s_row = {s: i for i, s in enumerate(satellite_ids)}
    kept = labels[labels["kept"].astype(bool)]
    missing = set(kept.ground_id) - g_row.keys() | set(kept.satellite_id) - s_row.keys()
    if missing:
        raise ValueError(f"label table names {len(missing)} images not in the train split, "
                         f"e.g. {next(iter(missing))}")
    kg = np.array([g_row[g] for g in kept.ground_id], dtype=np.int64)
    ks = np.array([s_row[s] for s in kept.satellite_id], dtype=np.int64)
    n = len(ground_ids)
    if len(kg) < math.floor(labeled_ratio * n):
        return EpochPairs(kg, ks, np.ones(len(kg), bool), True)
    free_g = np.setdiff1d(np.arange(n), kg)
    pool = np.setdiff1d(np.arange(len(satellite_ids)), ks)
    if len(pool) == 0:
        pool = np.arange(len(satellite_ids))
    draw = pool[torch.randperm(len(pool), generator=gen).numpy()]
    draw = np.resize(draw, len(free_g))  # cycles only if there are fewer free satellites than free grounds
    g = np.concatenate([kg, free_g])
    s = np.concatenate([ks, draw])
    lab = np.concatenate([np.ones(len(kg), bool), np.zeros(len(free_g), bool)])
    return EpochPairs(g, s, lab, False)


def mixed_epoch(pairs: EpochPairs, n_satellites: int, n: int, share: float, gen: torch.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch of N items: the labeled pairs repeated to fill (1 - share) x N (at least once each), and fake
    pairs (ground row g with satellite row n_satellites + g) of grounds drawn without replacement for the rest."""
    kept = len(pairs.ground)
    reps = max(1, round((1.0 - share) * n / kept))
    n_fake = min(n, max(0, n - reps * kept))
    fake_rows = torch.randperm(n, generator=gen).numpy()[:n_fake]
    g = np.concatenate([np.tile(pairs.ground, reps), fake_rows])
    s = np.concatenate([np.tile(pairs.satellite, reps), n_satellites + fake_rows])
    return g, s, np.ones(len(g), bool)


def round_stage(model: CrossViewModel, ground: np.ndarray, satellite: np.ndarray, ground_ids: np.ndarray,
                satellite_ids: np.ndarray, labels: pd.DataFrame, cfg: dict[str, Any], device: torch.device,
                round_index: int, fake: np.ndarray | None = None) -> Stage:
    """A self-training round: pseudo (and labeled) pairs, unlabeled images as negatives (docs/method.md §10).

    With `fake` (each train panorama's translated projection, rows aligned with `ground`), the cold start's
    self-made pairs stay in every epoch beside the pseudo pairs: they anchor the model while the few, noisy
    first pseudo labels carry it over to real tiles (the paper drops them after the cold start). While the
    labels are few (the method's labeled-only regime), `stage.fake_share` of an epoch's N items are fake pairs
    drawn afresh each epoch and the rest are the pseudo pairs repeated as the method repeats them; with
    `fake_share` null every fake pair joins every epoch, whatever the number of labels.
    """
    scfg = cfg["stage"]
    epochs = scfg["epochs"]
    batch = cfg["optim"]["batch_size"]
    n = len(ground_ids)
    sat_rows = satellite if fake is None else StackedRows(satellite, fake)
    share = scfg.get("fake_share")

    def with_fake(g: np.ndarray, s: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if fake is None:
            return g, s, lab
        rows = np.arange(len(fake))
        return (np.concatenate([g, rows]), np.concatenate([s, len(satellite) + rows]),
                np.concatenate([lab, np.ones(len(fake), bool)]))

    def epoch_batches(epoch: int, gen: torch.Generator) -> list[Batch]:
        pairs = pseudo_pairs(labels, ground_ids, satellite_ids, scfg["labeled_ratio"], gen)
        if pairs.labeled_only and fake is None:
            if len(pairs.ground) < 2:
                return []
            # About one epoch's worth of items, as the method's repetition, but each repetition is its own
            # permutation so no pair meets itself as a negative inside a batch.
            b = min(batch, len(pairs.ground))
            reps = max(1, n // len(pairs.ground))
            return [(pairs.ground[i], pairs.satellite[i], pairs.labeled[i])
                    for _ in range(reps) for i in distinct_batches(pairs.satellite, b, gen)]
        if fake is not None and pairs.labeled_only and share is not None and len(pairs.ground) > 0:
            g, s, lab = mixed_epoch(pairs, len(satellite), n, share, gen)
        else:
            g, s, lab = with_fake(pairs.ground, pairs.satellite, pairs.labeled)
        return [(g[i], s[i], lab[i]) for i in distinct_batches(s, min(batch, len(g)), gen)]

    def steps(epoch: int) -> int:
        kept = int(labels["kept"].sum())
        if fake is not None and share is not None and 0 < kept < math.floor(scfg["labeled_ratio"] * n):
            return n // batch
        if fake is not None:
            return (len(fake) + (kept if kept < math.floor(scfg["labeled_ratio"] * n) else n)) // batch
        if kept < 2:
            return 0
        if kept < math.floor(scfg["labeled_ratio"] * n):
            return max(1, n // kept) * (kept // min(batch, kept))
        return n // batch

    def lr_factor(epoch: int) -> float:
        # Round n covers [(n-1)/R, n/R] of one cosine over all rounds, whatever its own epoch count, so a
        # change to a later round's settings never changes an earlier round's schedule.
        return cosine_factor((round_index - 1 + epoch / epochs) / scfg["rounds"])

    return Stage(f"round-{round_index}", epochs, lr_factor, epoch_batches, gather_rows(ground, sat_rows),
                 cross_view_loss(model, cfg, device), steps)


def resolve(cfg: dict[str, Any]) -> torch.device:
    """Threads, seeds and the device; under torchrun also this rank's place in the process group."""
    setup_torch(cfg.get("threads", 1), cfg["seed"])
    return init_from_env(resolve_device(cfg.get("device", "auto")), cfg.get("threads", 1))
