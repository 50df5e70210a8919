"""A round's fixed costs, and what `evaluate.every` cuts of them: labels refreshed every epoch through the workflow.

Two Snakemake runs from one finished run's cold start (its artifacts up to round 0 copied, mtimes kept; a dry
run checks that no cold-start job would run again), each `rounds.count` rounds of one epoch (the paper's labels
refreshed every epoch): one evaluating every round on the test split (`evaluate.every: 1`, the default), one
only the last (`evaluate.every: <count>`). Prints each row's wall time, the seconds per round of each job from
Snakemake's benchmark files, and checks that the last round's labels and metrics are the same in both: the
evaluations in between change nothing that self-training reads. Run by hand from the repository root:

    python benchmarks/round_costs.py results/synth-unsupervised --count 8 --cores 2
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import time
from pathlib import Path

import pandas as pd
from selftrain_ablation import COLD_START_RULES, REPO, scheduled_rules, share_cold_start, snakemake

ROUND_JOBS = ("embed-train", "pseudo_label", "diagnose_labels", "train_round", "embed-test", "evaluate")


def job_seconds(run: Path, rounds: int) -> dict[str, float]:
    """Mean wall seconds per round of each round job, from results/<run>/benchmarks/round-N/<job>.tsv; 0 for a
    job that did not run in a round."""
    out = {}
    for job in ROUND_JOBS:
        files = [run / "benchmarks" / f"round-{n}" / f"{job}.tsv" for n in range(1, rounds + 1)]
        out[job] = sum(pd.read_csv(f, sep="\t")["s"].iloc[0] for f in files if f.exists()) / rounds
    return out


def same_round(a: Path, b: Path, round_dir: str) -> bool:
    """`round_dir`'s labels and matches byte for byte, and its metrics but the training time, in runs a and b."""
    def metrics(run: Path) -> dict[str, object]:
        values = json.loads((run / round_dir / "metrics.json").read_text())
        values.pop("train_seconds", None)
        return values

    files = ("labels.parquet", "matches.parquet")
    return all(filecmp.cmp(a / round_dir / f, b / round_dir / f, shallow=False) for f in files) and (
        metrics(a) == metrics(b))


def run_row(full: Path, name: str, count: int, every: int, cores: int, tmp: Path) -> tuple[Path, float]:
    """One workflow run of `count` one-epoch rounds from `full`'s cold start, evaluated every `every` rounds."""
    row = REPO / "results" / name
    share_cold_start(full, row)
    files = [REPO / "config.yaml", tmp / f"{name}.yaml"]
    files[1].write_text(f"run: {name}\nrounds: {{count: {count}, epochs: 1}}\nevaluate: {{every: {every}}}\n")
    target = [f"results/{name}/summary.csv"]
    redo = scheduled_rules(snakemake(files, target, cores, dry=True).stdout) & set(COLD_START_RULES)
    if redo:
        raise RuntimeError(f"{name}: Snakemake would redo the cold start ({sorted(redo)})")
    t0 = time.time()
    snakemake(files, target, cores)
    return row, time.time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="results/<run> of a finished demo-config run (its cold start)")
    parser.add_argument("--count", type=int, default=8, help="rounds of one epoch each")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the two runs' results/ folders")
    args = parser.parse_args()
    tmp = REPO / "results" / ".round-costs"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = {}
    for every in (1, args.count):
        rows[every] = run_row(args.run.resolve(), f"round-costs-every{every}", args.count, every, args.cores, tmp)
    last = f"round-{args.count}"
    same = same_round(rows[1][0], rows[args.count][0], last)
    table = pd.DataFrame({f"every {k}": job_seconds(path, args.count) for k, (path, _) in rows.items()})
    table.loc["round total"] = table.sum()
    print(f"{args.count} rounds of 1 epoch from {args.run}'s cold start; seconds per round of each job:")
    print(table.round(1).to_string())
    for k, (_, wall) in rows.items():
        print(f"evaluate.every {k}: workflow wall {wall:.0f} s")
    print(f"wall ratio every {args.count} / every 1: {rows[args.count][1] / rows[1][1]:.2f}")
    print(f"{last}'s labels, matches and metrics (but its training time) identical in both: {same}")
    summary = pd.read_csv(rows[args.count][0] / "summary.csv")
    print(summary.to_string(index=False))
    if not args.keep:
        for path, _ in rows.values():
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
