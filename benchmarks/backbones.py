"""ViT backbones beside convnext_atto on the demo world at equal training compute, and a frozen ViT-B/16 at 384 px
per batch; run by hand (issue 20).

Part 1, the rows: each is one Snakemake run of the demo (`config.yaml`, or the `--configfile` files) with one
model change, in its own `results/backbones-<row>/`:

    convnext_atto   the base config's own model (the demo's CNN)
    vit             `--vit` (default vit_tiny_patch16_224), random init, everything trained
    vit-frozen      the same ViT with model.freeze: backbone (only the pooling head, neck and temperature train)
    training-free   configs/training-free.yaml with that ViT: no cold start, round 0 = the backbone itself
                    (its class token), the rounds train the neck of the frozen backbone

Equal CPU time: before the runs, one training step (both encoders forward, InfoNCE, backward, AdamW) of each
row's model is timed at the config's batch and input sizes, and every training stage of a row gets the reference
row's epochs times (reference step time / its step time), at least 1 where the reference trains at all
(`--no-equalise` keeps the config's epochs). Embedding and labelling are not equalised (forward passes only).
Prints R@1 per round, the training seconds the checkpoints record, the epochs each row got, and wall time.
Random-init ViTs are expected to be weak here: the rows show that the path works and what it costs.

Part 2 (`--vit-b`): a frozen ViT-B/16 at 384x384 per batch: `forward` (one encoder, no gradients, as `cvgl embed`)
and `train` (the cross-view model with model.freeze: backbone: both encoders forward, InfoNCE, backward through
the heads and necks, AdamW), each in a fresh process so its peak RSS is its own (and CUDA's peak memory on a GPU).

    python benchmarks/backbones.py                                    # the four rows on the demo, then nothing else
    python benchmarks/backbones.py --rows vit-frozen training-free --reference convnext_atto   # two rows only
    python benchmarks/backbones.py --rows --vit-b --batch 16          # only the ViT-B/16 measurement, CPU
    python benchmarks/backbones.py --rows --vit-b --device cuda --batch 64 --precision bf16
    python benchmarks/backbones.py --configfile config.yaml tests/tiny.yaml --vit-b --vit-b-backbone test_vit \\
        --size 32 --batch 2 --steps 1 --workdir /tmp/backbones       # a tiny proof that everything runs
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from cvgl.config import load_config, merge_configs, read_config_file

REPO = Path(__file__).resolve().parents[1]
ROWS = ("convnext_atto", "vit", "vit-frozen", "training-free")


def row_override(row: str, vit: str) -> dict[str, Any]:
    """The config fragment of a row, merged over the base config files."""
    if row == "convnext_atto":
        return {}
    if row == "vit":
        return {"model": {"backbone": vit}}
    if row == "vit-frozen":
        return {"model": {"backbone": vit, "freeze": "backbone"}}
    free = read_config_file(REPO / "configs" / "training-free.yaml")
    free.pop("run", None)
    return merge_configs(free, {"model": {"backbone": vit}})


def resolved(configfiles: list[Path], override: dict[str, Any]) -> dict[str, Any]:
    """The row's config as the Snakefile resolves it (cvgl.config)."""
    return load_config(configfiles, override)


def encoder_sizes(model_cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    from cvgl.models import encoder_input_sizes

    return encoder_input_sizes(model_cfg)


def measure(model_cfg: dict[str, Any], mode: str, batch: int, steps: int, device_name: str, precision: str,
            threads: int) -> dict[str, Any]:
    """Seconds per batch (after one warm-up batch) of `forward` (the ground encoder, no gradients) or `train` (a
    cross-view training step of the whole model), the process's peak RSS and, on CUDA, the peak memory."""
    import torch

    from cvgl.losses import info_nce
    from cvgl.models import CrossViewModel, Encoder, autocast, autocast_dtype, resolve_device
    from cvgl.train import make_optimizer, setup_torch

    setup_torch(threads, 0)
    device = resolve_device(device_name)
    dtype = autocast_dtype(precision, device)
    if mode == "forward":  # one encoder, as `cvgl embed` runs each view
        model: torch.nn.Module = Encoder(model_cfg["backbone"], tuple(model_cfg["ground_size"]), model_cfg["head"],
                                         model_cfg.get("dim"), pretrained=bool(model_cfg.get("pretrained")),
                                         freeze=model_cfg.get("freeze", "none")).to(device)
    else:
        model = CrossViewModel(model_cfg).to(device)
        optimizer = make_optimizer(model, {"lr": 1e-4, "weight_decay": 0.01})
    built_rss = peak_rss_mb()
    sizes = encoder_sizes(model_cfg)
    ground = torch.rand(batch, 3, *model_cfg["ground_size"], device=device)
    satellite = torch.rand(batch, 3, *model_cfg["satellite_size"], device=device)

    def step() -> None:
        if mode == "forward":
            model.eval()
            with torch.no_grad(), autocast(device, dtype):
                model(ground)
            return
        model.train()
        with autocast(device, dtype):
            g, s, scale = model(ground, satellite)
        loss = info_nce(g.float(), s.float(), scale.float(), 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, kernels, lazy state
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - t0) / steps
    out = {"mode": mode, "backbone": model_cfg["backbone"], "freeze": model_cfg.get("freeze", "none"),
           "input": f"{sizes['ground'][0]}x{sizes['ground'][1]}", "batch": batch, "device": str(device),
           "precision": str(dtype).replace("torch.", "") if dtype else "fp32", "s/batch": round(seconds, 3),
           "images/s": round(batch * (1 if mode == "forward" else 2) / seconds, 2),
           "RSS after build (MB)": round(built_rss), "peak RSS (MB)": round(peak_rss_mb()),
           "trainable params": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "params": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        out["CUDA peak (MB)"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def equalised_epochs(configs: dict[str, dict[str, Any]], reference: str, step_s: dict[str, float]
                     ) -> dict[str, dict[str, Any]]:
    """Each row's training epochs scaled by reference step time / its step time (the reference's epochs x that)."""
    ref = configs[reference]
    out = {}
    for row, cfg in configs.items():
        factor = step_s[reference] / step_s[row]

        def scaled(own: int, ref_epochs: int) -> int:
            return 0 if own == 0 else max(1, round(ref_epochs * factor))  # noqa: B023

        out[row] = {"coldstart": {
            "intra": {"epochs": scaled(cfg["coldstart"]["intra"]["epochs"], ref["coldstart"]["intra"]["epochs"])},
            "cross": {"epochs": scaled(cfg["coldstart"]["cross"]["epochs"], ref["coldstart"]["cross"]["epochs"])}},
            "rounds": {"epochs": scaled(cfg["rounds"]["epochs"], ref["rounds"]["epochs"])}}
    return out


def run_row(row: str, configfiles: list[Path], override: dict[str, Any], workdir: Path, cores: int,
            rounds: int) -> dict[str, Any]:
    run = f"backbones-{row}"
    extra = workdir / f"{run}.yaml"
    extra.write_text(yaml.safe_dump(merge_configs(override, {"run": run})))
    targets = [f"results/{run}/round-{n}/metrics.json" for n in range(rounds + 1)]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores",
           str(cores), "--configfile", *map(str, configfiles), str(extra), "--", *targets]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{row}: snakemake failed\n{proc.stderr[-4000:]}")
    metrics = [json.loads((workdir / t).read_text()) for t in targets]
    out: dict[str, Any] = {"row": row}
    out.update({f"R@1 r{m['round']} (%)": round(100 * m["R@1"], 2) for m in metrics})
    res = workdir / "results" / run
    train_s = sum(h["seconds"] for p in [res / "coldstart" / "intra.pt", *[res / f"round-{n}" / "model.pt"
                                                                          for n in range(rounds + 1)]]
                  if p.exists() for h in load_history(p))
    out.update({"train (s)": round(train_s), "wall (s)": round(time.time() - t0)})
    return out


def load_history(path: Path) -> list[dict[str, Any]]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False).get("history", [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", type=Path, nargs="+", default=[REPO / "config.yaml"])
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS, help="rows to run (none: skip part 1)")
    ap.add_argument("--vit", default="vit_tiny_patch16_224", help="the rows' ViT (random init unless a tag's "
                    "weights are cached and the config sets model.pretrained)")
    ap.add_argument("--no-equalise", action="store_true", help="keep the config's epochs in every row")
    ap.add_argument("--reference", choices=ROWS, help="the row whose step time and epochs the others match "
                    "(default: the first of --rows; it is calibrated even when not run)")
    ap.add_argument("--calibration-steps", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=REPO, help="Snakemake's directory (results/ go there)")
    ap.add_argument("--vit-b", action="store_true", help="part 2: the frozen ViT-B/16 per-batch measurement")
    ap.add_argument("--vit-b-backbone", default="vit_base_patch16_384")
    ap.add_argument("--head", default="cls")
    ap.add_argument("--size", type=int, default=384, help="ViT-B input side (ground and satellite)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement in this process (JSON)
    a = ap.parse_args()

    if a.vit_b and a.batch < 2:
        ap.error("--batch: a training step needs at least 2 pairs (the neck's BatchNorm, the in-batch negatives)")
    if a.measure:
        mode, model_cfg = json.loads(a.measure)
        print(json.dumps(measure(model_cfg, mode, a.batch, a.steps, a.device, a.precision, a.threads)))
        return

    t_all = time.time()
    if a.rows:
        a.workdir.mkdir(parents=True, exist_ok=True)
        reference = a.reference or a.rows[0]
        calibrated = list(dict.fromkeys([reference, *a.rows]))
        configs = {row: resolved(a.configfile, row_override(row, a.vit)) for row in calibrated}
        overrides = {row: row_override(row, a.vit) for row in calibrated}
        if not a.no_equalise:
            step_s = {}
            for row, cfg in configs.items():
                m = measure(cfg["model"], "train", cfg["optim"]["batch_size"], a.calibration_steps, "cpu", "fp32",
                            cfg["threads"])
                step_s[row] = m["s/batch"]
                print(f"[calibration] {row}: {m['s/batch']} s per training step (batch {m['batch']}, "
                      f"{m['trainable params']:,} of {m['params']:,} parameters trained)", flush=True)
            for row, epochs in equalised_epochs(configs, reference, step_s).items():
                overrides[row] = merge_configs(overrides[row], epochs)
        results = []
        for row in a.rows:
            cfg = resolved(a.configfile, overrides[row])
            epochs = (f"{cfg['coldstart']['intra']['epochs']}+{cfg['coldstart']['cross']['epochs']}+"
                      f"{cfg['rounds']['count']}x{cfg['rounds']['epochs']}")
            result = run_row(row, a.configfile, overrides[row], a.workdir, a.cores, cfg["rounds"]["count"])
            result["epochs (intra+cross+rounds)"] = epochs
            results.append(result)
            print(json.dumps(result), flush=True)
        import pandas as pd

        print(pd.DataFrame(results).to_string(index=False))

    if a.vit_b:
        model_cfg = {"backbone": a.vit_b_backbone, "pretrained": False, "head": a.head, "dim": None,
                     "ground_size": [a.size, a.size], "satellite_size": [a.size, a.size], "freeze": "backbone"}
        rows = []
        for mode in ("forward", "train"):
            cmd = [sys.executable, __file__, "--measure", json.dumps([mode, model_cfg]), "--batch", str(a.batch),
                   "--steps", str(a.steps), "--device", a.device, "--precision", a.precision,
                   "--threads", str(a.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                raise RuntimeError(f"{mode}: measurement failed\n{proc.stderr[-4000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
        import pandas as pd

        print(pd.DataFrame(rows).to_string(index=False))
    print(f"total wall time {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
