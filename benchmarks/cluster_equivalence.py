"""Cluster execution gives the same results as a local run, for any config.

Runs the workflow twice from scratch in two working directories, once with the local executor and once through
Snakemake's cluster-generic executor with `workflow/profiles/cluster-generic-local` (every job submitted by
`submit.sh` as its own background process, like sbatch would), then compares what both made: every round's
`labels.parquet` and `matches.parquet`, `summary.csv` (byte for byte) and every model's weights (tensor by
tensor). Prints one line per artifact, both wall times and the number of submitted jobs; exits 1 on a mismatch.

    python benchmarks/cluster_equivalence.py [--configfile config.yaml [more.yaml ...]] [--cores 2] [--jobs 2]
        [--workdir DIR] [--local-workdir DIR]

`--local-workdir` reuses a finished local run (e.g. `.` after `snakemake --cores 2` in the repository) instead of
running it again. Needs `pip install snakemake-executor-plugin-cluster-generic` (in the `[test]` extra).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cvgl.config import load_config, results_dir

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "cluster-generic-local"
BYTE_ARTIFACTS = ("round-*/labels.parquet", "round-*/matches.parquet", "summary.csv")
MODEL_ARTIFACTS = ("round-*/model.pt", "coldstart/intra.pt", "translator/model.pt")


def run_workflow(workdir: Path, configfiles: list[Path], cores: int, extra: list[str]) -> float:
    """Run the whole workflow in `workdir`; return its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores",
           str(cores), "--configfile", *map(str, configfiles), *extra]
    t0 = time.time()
    with open(workdir / "snakemake.out", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"snakemake failed in {workdir} (see {workdir / 'snakemake.out'})")
    return time.time() - t0


def equal_values(a: object, b: object) -> bool:
    """Exact equality through nested dicts/lists of tensors, arrays and plain values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same_weights(a: Path, b: Path) -> bool:
    """The learned state of two checkpoints (`model` where present: the rest holds wall times) is identical."""
    sa, sb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    return equal_values(sa.get("model", sa), sb.get("model", sb))


def compare(local: Path, cluster: Path) -> list[tuple[str, bool]]:
    """(artifact, identical) for every compared artifact of the local run; a file the cluster run lacks differs."""
    rows = []
    for patterns, equal in ((BYTE_ARTIFACTS, lambda a, b: a.read_bytes() == b.read_bytes()),
                            (MODEL_ARTIFACTS, same_weights)):
        for pattern in patterns:
            for path in sorted(local.glob(pattern)):
                rel = path.relative_to(local)
                other = cluster / rel
                rows.append((str(rel), other.exists() and equal(path, other)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", type=Path, nargs="+", default=[REPO / "config.yaml"])
    ap.add_argument("--cores", type=int, default=2, help="local run: --cores")
    ap.add_argument("--jobs", type=int, default=2, help="cluster run: jobs running at once")
    ap.add_argument("--workdir", type=Path, help="where both runs go (default: a temporary folder, removed)")
    ap.add_argument("--local-workdir", type=Path, help="a finished local run to compare against instead")
    a = ap.parse_args()
    configfiles = [p.resolve() for p in a.configfile]
    results = Path(results_dir(load_config(configfiles)))  # resolved as the Snakefile resolves it
    with tempfile.TemporaryDirectory() as tmp:
        base = a.workdir.resolve() if a.workdir else Path(tmp)
        local_dir = a.local_workdir.resolve() if a.local_workdir else base / "local"
        local_s = None if a.local_workdir else run_workflow(local_dir, configfiles, a.cores, [])
        cluster_dir = base / "cluster"
        cluster_s = run_workflow(cluster_dir, configfiles, a.cores, ["--profile", str(PROFILE), "--jobs", str(a.jobs)])
        submitted = len(list((cluster_dir / ".snakemake" / "cluster-generic-local").glob("*.exit")))
        rows = compare(local_dir / results, cluster_dir / results)
    width = max((len(name) for name, _ in rows), default=10)
    for name, same in rows:
        print(f"{name:<{width}}  {'identical' if same else 'DIFFERS'}")
    local_txt = "reused" if local_s is None else f"{local_s:.0f} s"
    print(f"local run: {local_txt}; cluster-generic run: {cluster_s:.0f} s, {submitted} jobs submitted")
    ok = bool(rows) and all(same for _, same in rows)
    print("equivalent" if ok else "NOT equivalent" if rows else "nothing to compare")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
