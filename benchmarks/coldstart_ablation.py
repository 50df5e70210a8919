"""The paper's cold-start ablation (docs/method.md §13, rows a-e) on the synthetic world, through the workflow.

Each row is one Snakemake run that stops after the first pseudo labels (`round-0/metrics.json` and
`round-1/labels.parquet`), with one cold-start component switched off by config:

    (a) without projection   coldstart.projection: false (the panorama itself is the satellite-side input)
    (b) without translation  translate.method: none      (raw projections)
    (c) without intra-view   coldstart.intra.epochs: 0
    (d) without cross-view   coldstart.cross.epochs: 0   (round 0 = the intra-view model)
    (e) full cold start      the base config

Every row labels as the paper does (`labels.prior_weight: 0`, `labels.csls_k: 0`, see `--set`). All rows read
one rendered world (a finished run's `dataset/`, through the CVUSA adapter) so they differ only in the switch.
Prints the paper-shaped table: cold-start R@1, first-round pseudo labels kept, and how many are correct, with
each row's wall time.

    python benchmarks/coldstart_ablation.py --world results/synth-unsupervised/dataset [--cores 2]
        [--configfile config.yaml] [--set 'translate: {method: cyclegan}']
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
ROWS = {
    "(a) without projection": "coldstart: {projection: false}",
    "(b) without translation": "translate: {method: none}",
    "(c) without intra-view": "coldstart: {intra: {epochs: 0, smoothing: 0.1}}",
    "(d) without cross-view": "coldstart: {cross: {epochs: 0, smoothing: 0.3}}",
    "(e) full cold start": "",
}


def run_row(name: str, override: str, world: Path, configfiles: list[Path], extra: str, cores: int,
            workdir: Path) -> dict[str, object]:
    run = "ablation-" + name.split()[0].strip("()")
    base, row = workdir / f"{run}-base.yaml", workdir / f"{run}.yaml"
    base.write_text(f"run: {run}\ndataset: {{name: cvusa, root: {world.resolve()}}}\n{extra}\n")
    # A later config file: Snakemake merges it over the base and the row wins (never empty: Snakemake rejects that).
    row.write_text((override or f"run: {run}") + "\n")
    targets = [f"results/{run}/round-0/metrics.json", f"results/{run}/round-1/labels.parquet"]
    t0 = time.time()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--cores", str(cores),
           "--configfile", *map(str, configfiles), str(base), str(row), "--", *targets]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name}: snakemake failed\n{proc.stderr[-4000:]}")
    metrics = json.loads((REPO / targets[0]).read_text())
    labels = pd.read_parquet(REPO / targets[1])
    kept = labels[labels.kept]
    return {"row": name, "cold-start R@1 (%)": round(100 * metrics["R@1"], 2), "labels": int(len(kept)),
            "correct": int(kept.correct.sum()), "precision (%)": round(100 * kept.correct.mean(), 1)
            if len(kept) else None, "wall (s)": round(time.time() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, required=True, help="a rendered world (results/<run>/dataset)")
    ap.add_argument("--configfile", type=Path, nargs="+", default=[REPO / "config.yaml"])
    # The paper's labelling (no projection prior): the rows then differ in the cold start alone, and row (a),
    # which has no projections, can run at all.
    ap.add_argument("--set", default="labels: {prior_weight: 0.0, csls_k: 0}",
                    help="YAML lines added to every row (default: the paper's labels: no projection prior, no CSLS)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), help="subset of the row names")
    a = ap.parse_args()
    t0 = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.rows:
            results.append(run_row(name, ROWS[name], a.world, a.configfile, a.set, a.cores, Path(tmp)))
            print(results[-1], flush=True)
    table = pd.DataFrame(results)
    print(table.to_string(index=False))
    print(f"total wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
