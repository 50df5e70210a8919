# Helpers shared by the rule files: paths, config slices and input functions.
import json
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from cvgl.config import round_settings as cvgl_round_settings

RUN = config["run"]
RESULTS = f"results/{RUN}"
ROUNDS = config["rounds"]["count"]
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


def as_json(obj):
    """A config slice as one canonical JSON argument (params: a changed value reruns the job)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def dataset_root():
    """Where the manifest and the caches read images (cvgl.config checked it exists)."""
    return f"{RESULTS}/dataset" if config["dataset"]["name"] == "synth" else config["dataset"]["root"]


def dataset_inputs():
    """What the manifest depends on: the rendered world, or a real dataset's split files (published layout)."""
    name = config["dataset"]["name"]
    if name == "synth":
        return [f"{RESULTS}/dataset"]
    root = Path(dataset_root())
    if name == "cvusa":
        splits = [root / "splits/train-19zl.csv", root / "splits/val-19zl.csv"]
    elif name == "cvact":
        splits = [root / "ACT_data.mat"]
    else:  # vigor: every split file of every city present (the adapter checks the selected ones)
        splits = sorted((root / "splits").glob("*/*.txt"))
        if not splits:
            raise WorkflowError(f"dataset.root: no VIGOR split files under {root / 'splits'}/<City>/")
    for s in splits:
        if not s.exists():
            raise WorkflowError(f"dataset.root: {s} does not exist ({name} layout expected)")
    return [str(s) for s in splits]


def model_weights():
    """The backbone's local weights file, an input of the jobs that build a model from it (none = hub or random;
    cvgl.config checked that it exists)."""
    weights = config["model"].get("weights")
    return [weights] if weights else []


def gpus(count=1):
    """GPUs a job asks the scheduler for (resources: gpu): `count` (a training job: one per process), none when
    the run is pinned to the CPU (device: cpu). Locally `gpu` is only limited where a profile sets
    `resources: gpu=N`; on SLURM it becomes --gpus."""
    return count if config["device"] != "cpu" else 0


def image_size(view):
    return config["model"]["ground_size" if view == "ground" else "satellite_size"]


def train_config(stage, **extra):
    """The slice a training job sees: model, optimiser, augmentation, seed and its stage's settings."""
    # No `threads`: the job gets its rule's {threads} on the command line, so --cores scales it and changing
    # the thread count never reruns a stage.
    return as_json(dict(seed=config["seed"], device=config["device"], precision=config["precision"],
                        model=config["model"], optim=config["optim"], augment=config["augment"], stage=stage, **extra))


def round_settings(n):
    """Round n's settings (`cvgl.config.round_settings`: `rounds` with `rounds.overrides[n]` applied)."""
    return cvgl_round_settings(config["rounds"], n)


def previous_round(wildcards):
    return int(wildcards.n) - 1


def print_summary():
    path = Path(f"{RESULTS}/summary.csv")
    if path.exists():
        import pandas as pd
        from cvgl.pipeline import format_summary

        print(f"\ncvgl run {RUN!r} ({path}):\n" + format_summary(pd.read_csv(path)))


def fake_source():
    """Where the cold start's satellite-side images come from (docs/method.md §13 ablations):
    translated projections, raw projections (translate.method: none), or None = the raw panorama itself
    (coldstart.projection: false), in which case no projection or translation job runs."""
    if not config["coldstart"].get("projection", True):
        return None
    if config["translate"]["method"] == "none":
        return f"{RESULTS}/projected"
    return f"{RESULTS}/translated"


def cross_view_inputs(wildcards):
    """The cross-view stage reads the intra-view model and the fakes only when those stages are on."""
    out = {"ground": f"{RESULTS}/cache/train-ground.npy",
           "ground_ids": f"{RESULTS}/cache/train-ground.npy.ids.parquet",
           "weights": model_weights()}
    if config["coldstart"]["intra"]["epochs"] > 0:
        out["init"] = f"{RESULTS}/coldstart/intra.pt"
    if config["coldstart"]["cross"]["epochs"] > 0 and fake_source():
        out["translated"] = fake_source()
    return out
