"""The same config and seed make byte-identical label tables, with or without pixel caches, through the cluster
executor (its own file: under two pytest-xdist workers it runs beside the other whole-DAG files)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.dag import REPO, run_ok

CLUSTER_PROFILE = REPO / "workflow" / "profiles" / "cluster-generic-local"


def test_a_second_run_gives_byte_identical_label_tables(tiny_run: Path, tmp_path: Path) -> None:
    """The same config and seed, run again from the same world, make byte-identical label tables (the DAG up to
    them runs again: every job before round 2's labels). The second run keeps no pixel cache (`data.cache:
    false`: every read decodes the image files again), which must not change a byte either. Where
    Snakemake's cluster-generic executor is installed (the `test` extra), every job of the second run is submitted
    through it as its own process (submit.sh, like sbatch): nothing a job needs travels outside its declared
    inputs and params."""
    try:
        import snakemake_executor_plugin_cluster_generic  # noqa: F401
        args: tuple[str, ...] = ("--profile", str(CLUSTER_PROFILE))
    except ImportError:
        args = ()
    # The world's own determinism is tests/test_synth.py's; every job after it runs again here.
    shutil.copytree(tiny_run / "results" / "tiny" / "dataset", tmp_path / "results" / "tiny" / "dataset")
    labels = [f"results/tiny/round-{n}/labels.parquet" for n in (1, 2)]  # their DAG: 15 jobs, no evaluation
    no_cache = tmp_path / "no-cache.yaml"
    no_cache.write_text("data: {cache: false}\n")
    run_ok(tmp_path, *args, "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"),
           str(no_cache), "--", *labels)
    assert list((tmp_path / "results" / "tiny" / "cache").glob("*.files.parquet"))
    assert not list((tmp_path / "results" / "tiny" / "cache").glob("*.npy"))
    if args:
        exits = list((tmp_path / ".snakemake" / "cluster-generic-local").glob("*.exit"))
        assert len(exits) >= 15 and all(p.read_text().strip() == "0" for p in exits)  # the jobs went through submit.sh
    for n in (1, 2):
        a = (tiny_run / "results" / "tiny" / f"round-{n}" / "labels.parquet").read_bytes()
        b = (tmp_path / "results" / "tiny" / f"round-{n}" / "labels.parquet").read_bytes()
        assert a == b, f"round {n} label tables differ between two runs of the same config and seed"
