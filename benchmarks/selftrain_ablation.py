"""The paper's self-training ablation on the synthetic world, through the workflow's own rules, from one cold start.

Four rows, each one Snakemake run to `results/<run>/summary.csv`:

    full method               the config as given
    (a) w/o mutual matching   labels.mutual: false            every ground's top-1 is a candidate label
    (b) w/o threshold filter  labels.margin_filter: false     every mutual pair kept, whatever its margin
    (c) w/o curriculum        rounds.threshold_schedule: constant   round 1's threshold in every round

The full row runs first, from scratch. Every other row starts from a copy of the full row's results up to round 0
(world, manifest, caches, projections, translations, prior, cold start, round-0 embeddings and metrics), so all
rows share one cold start and differ only in the switch; a dry run checks that Snakemake schedules no cold-start
job for them. Prints the paper-shaped table (final R@1 and R@10, labels kept and correct at the last round, wall
time of the rounds) beside the paper's CVUSA and CVACT rows (ConvNeXt-S, its Table 3).

    python benchmarks/selftrain_ablation.py [--configfile config.yaml] [--cores 2] [--rows full a b c]
        [--set 'rounds: {count: 4}']      # YAML merged into every row
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ROWS = {
    "full": ("full method", ""),
    "a": ("(a) w/o mutual matching", "labels: {mutual: false}"),
    "b": ("(b) w/o threshold filter", "labels: {margin_filter: false}"),
    "c": ("(c) w/o curriculum", "rounds: {threshold_schedule: constant}"),
}
#: The paper's Table 3 (final R@1 / R@10 in %), for the same rows.
PAPER = {
    "full": (87.90, 97.51, 82.96, 94.43),
    "a": (14.40, 35.43, 61.90, 82.80),
    "b": (36.52, 56.10, 82.46, 94.04),
    "c": (32.56, 54.35, 63.14, 82.83),
}
#: What a row reuses from the full row: everything its rounds read, up to and including round 0.
SHARED = ("dataset", "manifest", "cache", "projected", "translated", "translator", "prior", "coldstart", "round-0")
#: Rules that would mean a row did not start from the shared cold start.
COLD_START_RULES = ("synth", "manifest", "cache_images", "project", "translate", "prior", "intra_view", "cross_view")


def snakemake(configfiles: list[Path], targets: list[str], cores: int, dry: bool = False
              ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--cores", str(cores),
           "--configfile", *map(str, configfiles), *(["--dry-run"] if dry else []), "--", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"snakemake failed ({' '.join(cmd)})\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def scheduled_rules(dry_run_output: str) -> set[str]:
    """Rule names of the jobs a dry run lists (`rule <name>:` lines)."""
    return set(re.findall(r"^rule (\w+):", dry_run_output, flags=re.MULTILINE))


def share_cold_start(full: Path, row: Path) -> None:
    """A fresh results/<row> holding copies of the full run's artifacts up to round 0 (mtimes kept)."""
    shutil.rmtree(row, ignore_errors=True)
    row.mkdir(parents=True)
    for name in SHARED:
        if (full / name).exists():
            subprocess.run(["cp", "-a", str(full / name), str(row / name)], check=True)


def run_row(key: str, base: list[Path], extra: str, cores: int, tmp: Path) -> dict[str, object]:
    name, switch = ROWS[key]
    run = f"selftrain-{key}"
    row_file = tmp / f"{run}.yaml"
    row_file.write_text(f"run: {run}\n{extra}\n")
    files = [*base, row_file]
    if switch:  # a later file: Snakemake merges it over the others
        (tmp / f"{run}-switch.yaml").write_text(switch + "\n")
        files.append(tmp / f"{run}-switch.yaml")
    target = f"results/{run}/summary.csv"
    if key != "full":
        share_cold_start(REPO / "results/selftrain-full", REPO / f"results/{run}")
        dry = snakemake(files, [target], cores, dry=True)
        redo = scheduled_rules(dry.stdout + dry.stderr) & set(COLD_START_RULES)
        if redo:
            raise RuntimeError(f"{name}: Snakemake would redo the cold start ({sorted(redo)}); rows would not share it")
    t0 = time.time()
    snakemake(files, [target], cores)
    summary = pd.read_csv(REPO / target)
    last = summary.iloc[-1]
    paper = PAPER[key]
    return {"row": name, "R@1 (%)": round(100 * last["R@1"], 2), "R@10 (%)": round(100 * last["R@10"], 2),
            "kept": int(last["labels_kept"]), "correct": int(last["labels_correct"]),
            "R@1 per round (%)": " ".join(f"{100 * r:.2f}" for r in summary["R@1"]),
            "wall (s)": round(time.time() - t0),
            "paper CVUSA R@1/R@10": f"{paper[0]:.2f} / {paper[1]:.2f}",
            "paper CVACT R@1/R@10": f"{paper[2]:.2f} / {paper[3]:.2f}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", type=Path, nargs="+", default=[REPO / "config.yaml"])
    ap.add_argument("--set", default="", help="YAML lines merged into every row's config")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--keep", action="store_true", help="keep results/selftrain-*")
    a = ap.parse_args()
    rows = ["full", *[r for r in a.rows if r != "full"]]  # the full row makes the shared cold start
    t0 = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in rows:
            results.append(run_row(key, a.configfile, a.set, a.cores, Path(tmp)))
            print(results[-1], flush=True)
    table = pd.DataFrame(results)
    print("\nSelf-training ablation (final round; wall = the row's Snakemake run, the full row's includes the "
          "cold start)")
    print(table.to_string(index=False))
    print(f"total wall time {time.time() - t0:.0f} s")
    if not a.keep:
        for key in rows:
            shutil.rmtree(REPO / f"results/selftrain-{key}", ignore_errors=True)


if __name__ == "__main__":
    main()
