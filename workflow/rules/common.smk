# Helpers shared by the rule files: paths, and thin wrappers over cvgl.config (every slice, switch and dataset
# file comes from there, so the rules stay declarations).
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

import cvgl.config as cvgl_config
from cvgl.config import as_json

RUN = config["run"]
RESULTS = cvgl_config.results_dir(config)
ROUNDS = config["rounds"]["count"]
EVALUATED = cvgl_config.evaluated_rounds(config)  # rounds evaluated on the test split (evaluate.every)
THREADS = config["threads"]
# Rules call the `cvgl` console script; fall back to this interpreter's module if it is not on PATH.
CVGL = "cvgl" if shutil.which("cvgl") else f"{sys.executable} -m cvgl"
# Training rules start `processes` copies of their stage with torchrun (one per GPU; cvgl.distributed).
PROCESSES = config["processes"]
TORCHRUN = "torchrun" if shutil.which("torchrun") else f"{sys.executable} -m torch.distributed.run"
CVGL_TRAIN = CVGL if PROCESSES == 1 else f"{TORCHRUN} --standalone --nproc_per_node {PROCESSES} -m cvgl"
# Training jobs' batch-gathering workers: on the command line, not in params, so a change reruns nothing.
LOADER = "" if config["data"]["workers"] is None else f"--loader-workers {config['data']['workers']}"



wildcard_constraints:
    n=r"\d+",
    split="train|test",
    view="ground|satellite",


def dataset_root():
    """Where the manifest and the caches read images (cvgl.config.dataset_root)."""
    return cvgl_config.dataset_root(config)


def dataset_inputs():
    """What the manifest depends on: the rendered world, or a real dataset's split files (cvgl.data.registry)."""
    try:
        return cvgl_config.dataset_inputs(config)
    except (FileNotFoundError, ValueError) as err:
        raise WorkflowError(str(err)) from None


def model_weights():
    """The backbone's local weights file, an input of the jobs that build a model from it (none = hub or random;
    cvgl.config checked that it exists)."""
    weights = config["model"]["weights"]
    return [weights] if weights else []


def gpus(count=1):
    """GPUs a job asks the scheduler for (resources: gpu): `count` (a training job: one per process), none when
    the run is pinned to the CPU (device: cpu). Locally `gpu` is only limited where a profile sets
    `resources: gpu=N`; on SLURM it becomes --gpus."""
    return count if config["device"] != "cpu" else 0


def image_cache(split, view):
    """One split and view's image cache (cvgl.config.image_cache); `split` may be the wildcard "{split}"."""
    return cvgl_config.image_cache(config, split, view)


def image_cache_ids(split, view):
    """The ids sidecar of `image_cache(split, view)`: row i of the cache is image id i."""
    return image_cache(split, view) + ".ids.parquet"


def image_size(view):
    return config["model"]["ground_size" if view == "ground" else "satellite_size"]


def previous_round(wildcards):
    return int(wildcards.n) - 1


def print_summary():
    path = Path(f"{RESULTS}/summary.csv")
    if path.exists():
        import pandas as pd
        from cvgl.summary import format_summary

        print(f"\ncvgl run {RUN!r} ({path}):\n" + format_summary(pd.read_csv(path)))


def fakes_path(source):
    """The folder of a kind of fake (cvgl.config.fake_source: translated/ or projected/), or None."""
    return f"{RESULTS}/{source}" if source else None


def fakes_argument(wildcards, input):
    """`--translated DIR` or `--projected DIR` (raw projections) for a training job's `fakes` input, else nothing."""
    if "fakes" not in input.keys() or not input.fakes:
        return ""
    return cvgl_config.fakes_argument(cvgl_config.fake_source(config), input.fakes)


def cross_view_inputs(wildcards):
    """The cross-view stage reads the intra-view model and the fakes only when those stages are on."""
    out = {"ground": image_cache("train", "ground"),
           "ground_ids": image_cache_ids("train", "ground"),
           "weights": model_weights()}
    if config["coldstart"]["intra"]["epochs"] > 0:
        out["init"] = f"{RESULTS}/coldstart/intra.pt"
    if cvgl_config.cold_start_fakes(config):
        out["fakes"] = fakes_path(cvgl_config.cold_start_fakes(config))
    return out
