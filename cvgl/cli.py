"""`cvgl <stage> ...`: the command line the workflow's rules call, thin over `cvgl.pipeline` (and the torch-free
`cvgl.data.stages`, `cvgl.summary`, `cvgl.report`: a job imports only what its command needs, so the small
jobs start in about a second instead of three).

Stages receive their config slice as one JSON argument (`--config '{...}'`), which the rule builds from
`config.yaml` through `params:`, so a changed setting reruns exactly the jobs it reaches.
Users also get `cvgl labels show|diff|export` and `cvgl summary` to read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--config is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--config must be a JSON object")
    return value


def _add(sub: argparse._SubParsersAction, name: str, help_: str, *args: tuple[str, dict[str, Any]]
         ) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    for flag, kw in args:
        p.add_argument(flag, **kw)
    return p


P = {"type": Path, "required": True}
CFG = {"type": _json, "required": True}
THREADS = {"type": int, "default": 1}
#: Training jobs: the rule's {threads} (scaled by Snakemake to --cores) overrides the config's `threads`.
TRAIN_THREADS = {"type": int, "default": None, "help": "torch threads (default: the config's `threads`)"}
#: Training jobs: DataLoader worker processes gathering batches (data.workers); the result does not depend on it.
WORKERS = {"type": int, "default": None, "help": "batch-gathering worker processes (default: 4 on a GPU, 0 on the CPU)"}
#: The cold start's fakes (cvgl.config.fake_source): translated projections, or raw ones (translate.method: none).
TRANSLATED = {"type": Path, "help": "translated projections (translated/) to pair each panorama with"}
PROJECTED = {"type": Path, "help": "raw projections (projected/, translate.method: none) to pair each panorama with"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvgl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, "synth", "render the synthetic world (synth.layout: cvusa | cvact | vigor)",
         ("--config", CFG), ("--seed", {"type": int, "default": 0}), ("--out", P), ("--threads", THREADS))
    _add(sub, "manifest", "list a dataset as images/truth/labeled manifests",
         ("--config", CFG), ("--root", P), ("--gt-ratio", {"type": float, "default": 0.0}),
         ("--seed", {"type": int, "default": 0}), ("--out", P))
    _add(sub, "cache", "decode one view/split into a uint8 array at the model's input size (--out X.npy) or list "
         "its files, decoded at every read (--out X.files.parquet: data.cache false)",
         ("--manifest", P), ("--root", P), ("--view", {"required": True, "choices": ["ground", "satellite"]}),
         ("--split", {"required": True, "choices": ["train", "test"]}),
         ("--size", {"type": int, "nargs": 2, "required": True}), ("--out", P), ("--threads", THREADS))
    _add(sub, "project", "project train panoramas to bird's-eye views",
         ("--manifest", P), ("--root", P), ("--config", CFG), ("--out", P), ("--threads", THREADS))
    _add(sub, "translate", "fit the unpaired translator and translate every projection",
         ("--projected", P), ("--satellite-cache", P), ("--method", {"default": "colour"}),
         ("--options", {"type": _json, "default": {}}), ("--model-out", P), ("--out", P),
         ("--threads", TRAIN_THREADS))
    _add(sub, "intra-view", "cold start part 1: intra-view self-supervised training",
         ("--config", CFG), ("--ground-cache", P), ("--satellite-cache", P), ("--out", P),
         ("--threads", TRAIN_THREADS), ("--loader-workers", WORKERS))
    _add(sub, "cross-view", "cold start part 2: panoramas vs. their translated (or raw) projections, or, with "
         "neither, vs. themselves",
         ("--config", CFG), ("--init", {"type": Path}), ("--ground-cache", P), ("--translated", TRANSLATED),
         ("--projected", PROJECTED), ("--out", P), ("--threads", TRAIN_THREADS), ("--loader-workers", WORKERS))
    embedding = (("--batch-size", {"type": int, "default": 128}), ("--device", {"default": "auto"}),
                 ("--precision", {"default": "auto", "choices": ["auto", "fp32", "bf16"]}),
                 ("--symmetries", {"type": int, "default": 1, "choices": [1, 2, 4, 8]}), ("--threads", THREADS))
    _add(sub, "embed", "embed a split's ground and satellite caches into parquet shards",
         ("--model", P), ("--ground-cache", {"type": Path}), ("--satellite-cache", {"type": Path}),
         ("--features", {"type": Path, "default": None, "help": "a frozen backbone's stored features (cvgl "
                         "features): only the head and neck run; instead of the caches"}),
         ("--out", P), *embedding)
    _add(sub, "features", "a frozen backbone's features of a split's caches, stored once for every round",
         ("--model", P), ("--ground-cache", P), ("--satellite-cache", P), ("--out", P), *embedding)
    _add(sub, "index", "FAISS index of a split's satellite embeddings",
         ("--embeddings", P), ("--factory", {"default": "Flat"}), ("--out", P), ("--threads", THREADS))
    _add(sub, "pseudo-label", "Adaptive Mutual Matching: a round's label table",
         ("--embeddings", P), ("--index", {"type": Path, "default": None,
                                           "help": "FAISS index of the satellites (approximate labels.index only)"}),
         ("--labeled", P), ("--round", {"type": int, "required": True}),
         ("--config", CFG), ("--out", P), ("--threads", THREADS), ("--device", {"default": "cpu"}),
         ("--prior", {"type": Path, "default": None, "help": "projection prior descriptors (labels.prior_weight)"}))
    _add(sub, "prior", "projection prior: pixel descriptors of train projections and tiles (labels.prior_weight)",
         ("--projected", P), ("--satellite-cache", P), ("--size", {"type": int, "default": 64}),
         ("--radius", {"type": float, "default": None}), ("--out", P), ("--threads", THREADS))
    _add(sub, "diagnose", "fill the `correct` column of a label table from the truth",
         ("--matches", P), ("--manifest", P), ("--out", P))
    _add(sub, "train-round", "a self-training round on pseudo (and labeled) pairs",
         ("--config", CFG), ("--init", P), ("--labels", P), ("--ground-cache", P), ("--satellite-cache", P),
         ("--round", {"type": int, "required": True}), ("--translated", TRANSLATED), ("--projected", PROJECTED),
         ("--out", P), ("--threads", TRAIN_THREADS), ("--loader-workers", WORKERS))
    _add(sub, "evaluate", "Recall@K of a round on the test split (and retrievals.parquet beside --out)",
         ("--embeddings", P), ("--manifest", P), ("--round", {"type": int, "required": True}),
         ("--labels", {"type": Path}), ("--model", {"type": Path}), ("--out", P),
         ("--top-k", {"type": int, "default": 10, "help": "tiles kept per query in retrievals.parquet"}),
         ("--radii", {"type": float, "nargs": "+", "default": [25.0, 50.0, 100.0],
                      "help": "radii in metres of the distance recalls (where coordinates exist)"}))
    _add(sub, "localize", "geo-localize images: the top-K gallery tiles of each query, with scores and coordinates",
         ("--model", P), ("--gallery", {"type": Path, "required": True,
                                        "help": "a CSV of path,lat,lon (paths relative to it) or a run directory"}),
         ("--queries", {"type": Path, "nargs": "+", "required": True,
                        "help": "images, folders of images, .txt lists of paths, or a run directory"}),
         ("--out", P), ("--top-k", {"type": int, "default": 5}),
         ("--index", {"default": "Flat", "help": "FAISS factory string of the gallery index (e.g. IVF4096,Flat)"}),
         ("--search", {"default": None, "help": "FAISS search parameters, e.g. nprobe=32"}),
         ("--gallery-split", {"default": "test", "choices": ["train", "test"]}),
         ("--query-split", {"default": "test", "choices": ["train", "test"]}),
         ("--device", {"default": "auto"}), ("--batch-size", {"type": int, "default": 64}), ("--threads", THREADS))
    _add(sub, "summary", "collect every round's metrics into summary.csv and print the table",
         ("--metrics", {"type": Path, "nargs": "+", "required": True}), ("--out", P))
    _add(sub, "plots", "margin histograms per round; Recall@K, label counts, precision, coverage across rounds (PNG)",
         ("--summary", P), ("--labels", {"type": Path, "nargs": "*", "default": []}), ("--out", P))
    _add(sub, "samples", "figure of a few train panoramas (drawn with the seed): projection, translation, true tile",
         ("--manifest", P), ("--root", P), ("--projected", {"type": Path}), ("--translated", {"type": Path}),
         ("--count", {"type": int, "default": 4}), ("--seed", {"type": int, "default": 0}), ("--out", P))
    _add(sub, "retrieval-figures", "a round's retrievals: test queries with their top-5 tiles, and a map of the "
         "top-1 errors where coordinates exist",
         ("--retrievals", P), ("--manifest", P), ("--ground-cache", P), ("--satellite-cache", P),
         ("--count", {"type": int, "default": 4}), ("--seed", {"type": int, "default": 0}), ("--out", P),
         ("--map-out", P))
    _add(sub, "resolved-config", "write the config a run resolved to (defaults filled in) as YAML",
         ("--config", CFG), ("--out", P))
    _add(sub, "summary-table", "summary.csv as an HTML table for the report", ("--summary", P), ("--out", P))
    _add(sub, "fetch-weights", "download timm's pretrained weights of backbones into the Hugging Face cache (run it "
         "where the machine is online, e.g. a cluster's login node, before jobs that read the cache offline)",
         ("backbones", {"nargs": "+", "metavar": "BACKBONE",
                        "help": "timm names with their pretrained tags, e.g. convnext_base.fb_in22k_ft_in1k_384"}))
    labels = sub.add_parser("labels", help="inspect pseudo-label tables")
    lsub = labels.add_subparsers(dest="labels_command", required=True)
    _add(lsub, "show", "counts, margins, precision and the first rows of a label table",
         ("table", {"type": Path}), ("--rows", {"type": int, "default": 10}))
    _add(lsub, "diff", "kept pairs added, dropped and changed between two label tables (e.g. two rounds)",
         ("old", {"type": Path}), ("new", {"type": Path}), ("--rows", {"type": int, "default": 5}))
    _add(lsub, "export", "a label table as CSV", ("table", {"type": Path}), ("--out", P),
         ("--kept-only", {"action": "store_true"}))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as err:
        print(f"cvgl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`cvgl labels show ... | head`): stop quietly, as a Unix filter does; stdout goes
        # to /dev/null so the interpreter's final flush raises nothing more (the recipe of Python's signal docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


#: Jobs whose settings (--config or --options) carry torch's `threads`; the other commands take --threads alone.
TRAINING_COMMANDS = ("translate", "intra-view", "cross-view", "train-round")


def apply_threads(a: argparse.Namespace) -> None:
    """A training job's `--threads` (its rule's, scaled by Snakemake to --cores) and `--loader-workers` go into
    its settings (`cvgl.config.job_settings`), over the settings' own `threads`."""
    from cvgl.config import job_settings

    if a.command not in TRAINING_COMMANDS:
        return
    for settings in ("config", "options"):
        if isinstance(getattr(a, settings, None), dict):
            setattr(a, settings, job_settings(getattr(a, settings), a.threads, getattr(a, "loader_workers", None)))


def fakes_dir(a: argparse.Namespace) -> Path | None:
    """The folder of the cold start's fakes a training stage was given: --translated or --projected (not both)."""
    if a.translated is not None and a.projected is not None:
        raise ValueError("--translated and --projected: a stage pairs panoramas with one kind of fake; give one")
    return a.translated if a.translated is not None else a.projected


def check_stage_config(a: argparse.Namespace) -> None:
    """A stage's own config slice, checked as the Snakefile checks the whole config (`cvgl.config`), so a stage
    called by hand fails in seconds on a bad combination, before it reads any data."""
    from cvgl.config import check_labels, check_model, check_translate, with_section_defaults

    if a.command == "translate":
        check_translate({"method": a.method, "cyclegan": a.options})
    elif a.command in ("intra-view", "cross-view", "train-round"):
        # A stage that starts from a checkpoint reads no pretrained weights.
        check_model(a.config["model"], pretrained=getattr(a, "init", None) is None)
    elif a.command == "embed" and a.features is None and (a.ground_cache is None or a.satellite_cache is None):
        raise ValueError("embed: give --ground-cache and --satellite-cache, or --features")
    elif a.command == "pseudo-label":
        check_labels(a.config)
        if with_section_defaults(a.config, "labels")["prior_weight"] > 0 and a.prior is None:
            raise ValueError("labels.prior_weight: > 0 needs the projection prior's descriptors (--prior DIR)")


def run(a: argparse.Namespace) -> None:
    c = a.command
    apply_threads(a)
    check_stage_config(a)
    if c in LIGHT_COMMANDS:
        run_light_stage(a)
    elif c in PIPELINE_COMMANDS:
        run_pipeline_stage(a)
    else:
        run_tool(a)


#: Stages that import no torch (`cvgl.data.stages`, `cvgl.summary`, `cvgl.label_table`, `cvgl.report`).
LIGHT_COMMANDS = ("manifest", "cache", "summary", "diagnose", "samples", "resolved-config", "summary-table",
                  "retrieval-figures")
#: Stages of `cvgl.pipeline` (torch, and timm where a model is built).
PIPELINE_COMMANDS = ("synth", "project", "translate", "intra-view", "cross-view", "embed", "features", "index",
                     "pseudo-label", "prior", "train-round", "evaluate")


def run_light_stage(a: argparse.Namespace) -> None:
    """The torch-free stages: each imports only its module."""
    c = a.command
    if c == "manifest":
        from cvgl.data.stages import manifest_stage

        manifest_stage(a.config, a.root, a.gt_ratio, a.seed, a.out)
    elif c == "cache":
        from cvgl.data.stages import cache_stage

        cache_stage(a.manifest, a.root, a.view, a.split, tuple(a.size), a.out, a.threads)
    elif c == "summary":
        from cvgl.summary import summary_stage

        summary_stage(a.metrics, a.out)
    elif c == "diagnose":
        from cvgl.label_table import diagnose_stage

        diagnose_stage(a.matches, a.manifest, a.out)
    else:
        run_report_stage(a)


def run_pipeline_stage(a: argparse.Namespace) -> None:
    """The stages in `cvgl.pipeline`."""
    from cvgl import pipeline

    c = a.command
    if c == "synth":
        pipeline.synth_stage(a.config, a.out, a.seed, a.threads)
    elif c == "project":
        pipeline.project_stage(a.manifest, a.root, a.config, a.out, a.threads)
    elif c == "translate":
        pipeline.translate_stage(a.projected, a.satellite_cache, a.method, a.model_out, a.out, a.options,
                                 threads=a.threads)
    elif c == "intra-view":
        pipeline.intra_view_train(a.config, a.ground_cache, a.satellite_cache, a.out)
    elif c == "cross-view":
        pipeline.cross_view_train(a.config, a.init, a.ground_cache, fakes_dir(a), a.out)
    elif c == "embed":
        pipeline.embed_stage(a.model, {"ground": a.ground_cache, "satellite": a.satellite_cache}, a.out,
                             a.batch_size, a.device, a.threads, a.precision, a.symmetries, a.features)
    elif c == "features":
        pipeline.features_stage(a.model, {"ground": a.ground_cache, "satellite": a.satellite_cache}, a.out,
                                a.batch_size, a.device, a.threads, a.precision, a.symmetries)
    elif c == "index":
        pipeline.index_stage(a.embeddings, a.factory, a.out, a.threads)
    elif c == "pseudo-label":
        pipeline.pseudo_label_stage(a.embeddings, a.index, a.labeled, a.round, a.config, a.out, a.threads,
                                    a.prior, a.device)
    elif c == "prior":
        from cvgl.prior import prior_stage

        prior_stage(a.projected, a.satellite_cache, a.size, a.radius, a.out, a.threads)
    elif c == "train-round":
        pipeline.round_train(a.config, a.init, a.labels, a.ground_cache, a.satellite_cache, a.out, a.round,
                             fakes_dir(a))
    elif c == "evaluate":
        pipeline.evaluate_stage(a.embeddings, a.manifest, a.round, a.labels, a.out, a.model, a.top_k,
                                tuple(a.radii))


def run_tool(a: argparse.Namespace) -> None:
    """The user's commands: localize, plots, fetch-weights, labels."""
    c = a.command
    if c == "localize":
        from cvgl.localize import localize

        localize(a.model, a.gallery, a.queries, a.out, a.top_k, a.index, a.search, a.device, a.batch_size,
                 a.threads, a.gallery_split, a.query_split)
    elif c == "plots":
        from cvgl.plots import write_plots

        for path in write_plots(a.summary, a.labels, a.out):
            print(path, file=sys.stderr)
    elif c == "fetch-weights":
        from cvgl.weights import fetch_weights

        for name in a.backbones:
            fetch_weights(name)
    elif c == "labels":
        from cvgl import inspect_labels

        if a.labels_command == "show":
            inspect_labels.show_labels(a.table, a.rows)
        elif a.labels_command == "diff":
            inspect_labels.print_diff(a.old, a.new, a.rows)
        else:
            n = inspect_labels.export_labels(a.table, a.out, a.kept_only)
            print(f"{a.out}: {n} rows", file=sys.stderr)


def run_report_stage(a: argparse.Namespace) -> None:
    """The report items that are not plots (cvgl.report)."""
    from cvgl import report

    if a.command == "samples":
        shown = report.write_samples(a.manifest, a.root, a.projected, a.translated, a.count, a.seed, a.out)
        print(f"{a.out}: train panoramas {', '.join(shown)}", file=sys.stderr)
    elif a.command == "resolved-config":
        report.write_resolved_config(a.config, a.out)
    elif a.command == "retrieval-figures":
        shown = report.retrieval_figure(a.retrievals, a.manifest, a.ground_cache, a.satellite_cache, a.count,
                                        a.seed, a.out)
        mapped = report.error_map(a.retrievals, a.manifest, a.map_out)
        print(f"{a.out}: test queries {', '.join(shown)}; {a.map_out}: {mapped} queries", file=sys.stderr)
    else:
        report.write_summary_table(a.summary, a.out)


if __name__ == "__main__":
    sys.exit(main())
