"""The one config module: merge, schema, defaults, the paper's per-dataset values, every rule that ties two keys
together, and each stage's slice.

jsonschema's own messages point at the enclosing object and print the whole schema; here each problem is one
line such as `rounds.gt_ratio: 1.5 is greater than the maximum of 1` or `rounds.tresh: unknown key (allowed
here: count, epochs, ...)`, so a typo in a long config is found at once. The Snakefile calls `resolve_config`
before any rule exists; each `cvgl` stage checks its own slice again (`check_model`, `check_labels`), so a
combination of individually valid keys fails in seconds, never inside a job after hours of upstream work.

Every default is stated once, in the schema (`workflow/schemas/config.schema.yaml`): `resolve_config` fills a
whole config with them and `with_section_defaults` fills one stage's slice given by hand (a test, a benchmark,
a stage called without the workflow). The paper's per-dataset values behind `null` come from the dataset
registry (`cvgl.data.registry`). The second half of this module is what the workflow's rules, the CLI and the
benchmarks read from a resolved config: each stage's slice (`train_slice`, `pseudo_label_slice`, ...) and the
switches that several keys decide together (`fake_source`, `keeps_fake_pairs`, ...), so the rules stay
declarations and nobody rebuilds a slice on their own.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError
from jsonschema.validators import validator_for

JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
              type(None): "null"}
REPO = Path(__file__).resolve().parents[1]
#: The schema: every key's type, default and meaning (the Snakefile validates against the same file).
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
#: The demo config, the config only when no other file is named (it may not sit under real data).
DEMO_CONFIG = REPO / "config.yaml"


class ConfigError(ValueError):
    """A config that does not match the schema; the message lists every problem, one key path per line."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the config schema is missing (cvgl reads it from its repository; "
                                "install cvgl editable, pip install -e .)") from None


@functools.lru_cache(maxsize=4)
def _schema(path: str) -> dict[str, Any]:
    """The schema at `path`, read once per process (callers never modify it)."""
    return load_schema(path)


def key_path(parts: Iterable[Any]) -> str:
    """`rounds.overrides.3.epochs` for the path ['rounds', 'overrides', '3', 'epochs']."""
    return ".".join(str(p) for p in parts) or "(top level)"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _suggest(key: str, known: list[str]) -> str:
    """'did you mean tile_size?' for a near miss, else the keys allowed at that level."""
    close = difflib.get_close_matches(key, known, n=2)
    return f"did you mean {' or '.join(close)}?" if close else f"allowed here: {', '.join(known)}"


def describe(error: ValidationError) -> list[str]:
    """One line per problem: the key's path, then what is wrong in words."""
    path = list(error.absolute_path)
    kind, expected = error.validator, error.validator_value
    if kind == "additionalProperties" and expected is False:
        known = sorted(error.schema.get("properties", {}))
        return [f"{key_path([*path, key])}: unknown key ({_suggest(str(key), known)})"
                for key in sorted(set(error.instance) - set(known))]
    if kind == "required":
        return [f"{key_path([*path, key])}: required key is missing" for key in expected if key not in error.instance]
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        got = JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        return [f"{key_path(path)}: expected {wanted}, got {got} {_short(error.instance)}"]
    if kind == "enum":
        return [f"{key_path(path)}: {_short(error.instance)} is not one of {', '.join(map(str, expected))}"]
    return [f"{key_path(path)}: {error.message}"]


def config_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every way `config` breaks `schema`, sorted by key path (empty = valid)."""
    validator = validator_for(schema)(schema)
    lines = [line for err in validator.iter_errors(config) for line in describe(err)]
    return sorted(set(lines))


def check_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError listing every problem of `config` (nothing happens for a valid one)."""
    errors = config_errors(config, load_schema(schema_path))
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} problem{'s' * (len(errors) > 1)}; "
                          f"schema: {schema_path}):\n  " + "\n  ".join(errors))


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with every missing key that has a schema default filled in, at every depth (an
    object that is itself a default gets its own keys' defaults). The schema states each default once."""
    out = copy.deepcopy(config)
    _fill(out, schema, schema)
    return out


def _fill(instance: Any, node: dict[str, Any], root: dict[str, Any]) -> None:
    node = _dereference(node, root)
    if not isinstance(instance, dict):
        return
    named = node.get("properties", {})
    for key, sub in named.items():
        sub = _dereference(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill(instance[key], sub, root)
    # A mapping of names (`localize.<name>`): each entry gets the defaults of the entries' schema.
    entries = node.get("additionalProperties")
    if isinstance(entries, dict):
        for key in instance.keys() - named.keys():
            _fill(instance[key], entries, root)


def _dereference(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema node a local `$ref` ("#/$defs/stage") points at, or `node` itself."""
    ref = node.get("$ref")
    if not ref:
        return node
    for part in ref.removeprefix("#/").split("/"):
        root = root[part]
    return root


def schema_node(*keys: str) -> dict[str, Any]:
    """The schema of the config section at `keys` (("translate", "cyclegan"); none = the whole config)."""
    root = _schema(str(SCHEMA_PATH))
    node = root
    for i, key in enumerate(keys):
        properties = _dereference(node, root).get("properties", {})
        if key not in properties:
            raise KeyError(f"{key_path(keys[:i + 1])}: not a key of the config schema")
        node = properties[key]
    return _dereference(node, root)


def schema_defaults(*keys: str) -> dict[str, Any]:
    """Every default of the section at `keys`, nested sections included (the schema states each once)."""
    out: dict[str, Any] = {}
    _fill(out, schema_node(*keys), _schema(str(SCHEMA_PATH)))
    return out


def with_section_defaults(settings: dict[str, Any] | None, *keys: str) -> dict[str, Any]:
    """A copy of one section's `settings` with the keys it leaves out set to the schema's defaults, for a
    stage's slice given by hand (in the workflow every slice comes from a resolved config, already complete).
    Keys the section does not know are kept as they are."""
    out = copy.deepcopy(settings or {})
    _fill(out, schema_node(*keys), _schema(str(SCHEMA_PATH)))
    return out


# ---------------------------------------------------------------------------------------------------------
# Merging config files and resolving the result


def merge_configs(*layers: dict[str, Any]) -> dict[str, Any]:
    """Config layers merged as Snakemake merges --configfile files and --config: nested mappings key by key,
    a later layer wins; the layers are not modified."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_configs(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def typed_overrides(overrides: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """`--config` values with the types the schema wants. Snakemake reads a nested `--config key='{...}'` with
    YAML's base loader, so every scalar in it arrives as a string (`rounds='{gt_ratio: 1.0}'` gives '1.0'); each
    string where the schema wants no string is read as YAML again. One that still is not of an accepted type
    stays as it is, for the schema check to name."""
    root = _schema(str(schema_path))
    return {key: _typed(value, _child(root, key, root), root) for key, value in overrides.items()}


#: Python types of the schema's non-string JSON types (a bool is no integer or number here).
PYTHON_TYPES: dict[str, tuple[type, ...]] = {"boolean": (bool,), "integer": (int,), "number": (int, float),
                                          "null": (type(None),), "array": (list,), "object": (dict,)}


def _child(node: dict[str, Any], key: str, root: dict[str, Any]) -> dict[str, Any]:
    """The schema of `key` inside the object `node` (its named property, else its entries' schema; {} if none)."""
    node = _dereference(node, root)
    sub = node.get("properties", {}).get(key, node.get("additionalProperties"))
    return _dereference(sub, root) if isinstance(sub, dict) else {}


def _typed(value: Any, node: dict[str, Any], root: dict[str, Any]) -> Any:
    """`value` (a `--config` value at the schema `node`) with its strings typed (`typed_overrides`)."""
    if isinstance(value, Mapping):
        return {k: _typed(v, _child(node, k, root), root) for k, v in value.items()}
    if isinstance(value, list):
        items = node.get("items")
        return [_typed(v, _dereference(items, root) if isinstance(items, dict) else {}, root) for v in value]
    if not isinstance(value, str):
        return value
    return _reread(value, node)  # YAML types whatever a string holds inside it too


def _reread(text: str, node: dict[str, Any]) -> Any:
    """`text` read as YAML where the schema `node` takes no string and the value read is of a type it takes
    (or one of its `enum` values); else `text` itself."""
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types:  # a path or a name; only a bare null means none where none is allowed
        return None if text == "null" and "null" in types else text
    if not (types or "enum" in node):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if types:
        accepted = tuple(t for name in types for t in PYTHON_TYPES.get(name, ()))
        fits = isinstance(value, accepted) and (not isinstance(value, bool) or "boolean" in types)
    else:
        fits = text not in node["enum"] and value in node["enum"]
    return value if fits else text


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One config file's mapping (an empty file is an empty mapping); errors name the file."""
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, got {type(data).__name__}")
    return data


def load_config(configfiles: Iterable[str | Path], overrides: dict[str, Any] | None = None,
                schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The resolved config of `configfiles` merged in order, then `overrides` (as `--config`), exactly as the
    Snakefile resolves it: for benchmarks and scripts that read a run's settings outside Snakemake."""
    files = [Path(f) for f in configfiles]
    config = merge_configs(*(read_config_file(f) for f in files), typed_overrides(overrides or {}, schema_path))
    return resolve_config(config, schema_path, files, DEMO_CONFIG)


def resolve_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH,
                   configfiles: Iterable[str | Path] = (), demo_config: str | Path | None = None,
                   check_builds: bool = True) -> dict[str, Any]:
    """The config every rule and stage sees: checked against the schema, its defaults filled in, null
    per-dataset keys set to the paper's value (`with_paper_defaults`), then every cross-key rule checked.

    `configfiles` are the files the config was merged from and `demo_config` the demo's `config.yaml`: the
    demo's settings (tuned on the synthetic world) may not sit under a real dataset's. `check_builds: False`
    skips the per-section checks of `model`, `labels` and `translate` (they build a model, a translator or an
    index: seconds of torch, timm and FAISS imports): a job's own Snakemake process on a cluster passes it, its
    config having been checked by the process that submitted it. Raises ConfigError listing every problem, one
    key path per line."""
    check_config(config, schema_path)
    resolved = with_paper_defaults(fill_defaults(config, load_schema(schema_path)))
    errors = demo_mix_errors(resolved, configfiles, demo_config) + cross_key_errors(resolved, check_builds)
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  "
                          + "\n  ".join(errors))
    return resolved


#: The `project` keys a null stands for the paper's value of (`cvgl.data.registry.PaperDefaults`).
PROJECTION_KEYS = ("pano_size", "size", "fov_deg", "band")


def with_paper_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with null `rounds.t0` and `project` keys set to the paper's values for the dataset
    read (the synthetic world counts as the layout it is written in; `cvgl.data.registry`)."""
    from cvgl.data.registry import dataset_for

    out = copy.deepcopy(config)
    paper = dataset_for(out["dataset"], out.get("synth")).paper
    if out["rounds"].get("t0") is None:
        out["rounds"]["t0"] = paper.t0
    projection = paper.project()
    for key in PROJECTION_KEYS:
        if out["project"].get(key) is None:
            out["project"][key] = projection[key]
    return out


def demo_mix_errors(config: dict[str, Any], configfiles: Iterable[str | Path], demo_config: str | Path | None
                    ) -> list[str]:
    """The demo config merged under a real dataset: its small sizes and the settings chosen on the synthetic
    world's truth would silently replace the paper's."""
    if demo_config is None or config["dataset"]["name"] == "synth":
        return []
    demo = Path(demo_config).resolve()
    if not any(Path(f).resolve() == demo for f in configfiles):
        return []
    name = config["dataset"]["name"]
    return [f"dataset.name: {name} is real data, but {demo.name} (the demo: the synthetic world, CPU sizes, "
            "settings tuned on its truth) is among the config files; start from the paper's settings instead: "
            f"--configfile configs/{name}.yaml (plus your own file)"]


def cross_key_errors(config: dict[str, Any], check_builds: bool = True) -> list[str]:
    """Every rule between keys of a resolved config that a job would otherwise find out (empty = none);
    `check_builds: False` leaves out the per-section checks of `model`, `labels` and `translate`."""
    errors = dataset_errors(config["dataset"])
    errors += round_override_errors(config["rounds"])
    checks = ((check_model, "model"), (check_labels, "labels"), (check_translate, "translate"))
    for check, section in checks if check_builds else ():
        try:
            check(config[section], config)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            errors.append(str(err))
    return errors


def dataset_errors(dataset: dict[str, Any]) -> list[str]:
    if dataset["name"] == "synth":
        return []
    root = dataset["root"]
    if not root:
        return [f"dataset.root: required for dataset.name={dataset['name']!r} (e.g. --config "
                "dataset='{root: /path/to/data}')"]
    if not Path(root).is_dir():
        return [f"dataset.root: {root} is not a directory"]
    return []


def check_model(model: dict[str, Any], config: dict[str, Any] | None = None, pretrained: bool = True) -> None:
    """The `model` slice builds: a timm backbone (and tag) that exists, inputs it can take, a head and a
    `model.freeze` (none | backbone | last-k, k at most its block count) that fit it and, unless
    `pretrained` is False (a stage that starts from a checkpoint), a weights file that exists or pretrained
    weights that can be found (`cvgl.models.check_backbone`, `cvgl.weights`)."""
    weights = model.get("weights") if pretrained else None
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"model.weights: {weights} does not exist (or is not a file)")
    check_backbone_once(model)
    if pretrained and model.get("pretrained") and not weights:
        from cvgl.weights import hub_offline, hub_weights_cached, missing_weights_message  # imports torch

        if hub_offline() and not hub_weights_cached(model["backbone"]):
            raise RuntimeError(missing_weights_message(model["backbone"]))


def check_backbone_once(model: dict[str, Any]) -> None:
    """`cvgl.models.check_backbone`, remembered: a slice that passed once, under the same timm, torch and check
    code, passes again without the seconds of importing timm, so `snakemake -n` and reruns start at once.
    Only passes are remembered (a marker file per slice under `cache_dir()`); a failing slice is checked anew."""
    marker = backbone_check_marker(model)
    if marker is not None and marker.exists():
        return
    from cvgl.models import check_backbone

    check_backbone(model)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only home: check every time
            pass


def cache_dir() -> Path:
    """Where cvgl keeps small per-user state: $CVGL_CACHE_DIR, else $XDG_CACHE_HOME/cvgl, else ~/.cache/cvgl."""
    if os.environ.get("CVGL_CACHE_DIR"):
        return Path(os.environ["CVGL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cvgl"


def backbone_check_marker(model: dict[str, Any]) -> Path | None:
    """The marker file of one `model` slice's passed check: a hash of the slice, the timm and torch versions
    and the checking code itself (cvgl/models.py), so an upgrade or an edit checks again; None when a version
    cannot be read."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = [version(package) for package in ("timm", "torch")]
    except PackageNotFoundError:
        return None
    code = hashlib.sha256((Path(__file__).parent / "models.py").read_bytes()).hexdigest()
    key = json.dumps([model, versions, code], sort_keys=True, default=str)
    return cache_dir() / "checked-models" / hashlib.sha256(key.encode()).hexdigest()[:32]


#: Label scores that only the exact, blocked matching computes.
EXACT_ONLY = ("prior_weight", "csls_k")


def check_labels(labels: dict[str, Any], config: dict[str, Any] | None = None) -> None:
    """The `labels` slice (keys left out take the schema's defaults): the prior needs projections; the prior
    and CSLS need exact (Flat) scores."""
    labels = with_section_defaults(labels, "labels")
    if config is not None and labels["prior_weight"] > 0 and not config["coldstart"]["projection"]:
        raise ValueError("labels.prior_weight: > 0 compares projections with tiles, but coldstart.projection "
                         "is false (no projection job runs); set labels.prior_weight: 0")
    for key in EXACT_ONLY:
        if labels[key] > 0 and labels["index"] != "Flat":
            raise ValueError(f"labels.{key}: > 0 needs exact scores, but labels.index is {labels['index']!r}; "
                             f"use Flat or set labels.{key}: 0")
    check_index_strings(labels["index"], labels["search"])


def check_index_strings(factory: str, search: str | None) -> None:
    """`labels.index` is a FAISS factory string FAISS can build, and `labels.search` parameters it has."""
    import faiss

    from cvgl.index import set_search_parameters

    try:
        index = faiss.index_factory(8, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise ValueError(f"labels.index {factory!r}: not a FAISS index factory string (e.g. Flat, IVF1024,Flat, "
                         "HNSW32)") from None
    set_search_parameters(index, search)


def check_translate(translate: dict[str, Any], config: dict[str, Any] | None = None) -> None:
    """A CycleGAN's images are large enough for its generator and PatchGAN (built on the meta device)."""
    if translate.get("method") != "cyclegan" or (config is not None and not config["coldstart"]["projection"]):
        return
    import torch

    from cvgl.translate.cyclegan import CycleGANConfig, patch_discriminator, resnet_generator

    cfg = CycleGANConfig.from_dict(translate.get("cyclegan"))
    with torch.device("meta"):
        try:
            patch_discriminator(cfg.ndf, cfg.disc_layers)(resnet_generator(cfg.ngf, cfg.blocks)(
                torch.zeros(1, 3, cfg.size, cfg.size)))
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"translate.cyclegan.size {cfg.size}: too small for the generator and a "
                             f"{cfg.disc_layers}-layer PatchGAN ({str(err).splitlines()[0]})") from None


def round_override_errors(rounds: dict[str, Any]) -> list[str]:
    """`rounds.overrides` may only name rounds that run."""
    return [f"rounds.overrides.{n}: there is no round {n} (rounds.count is {rounds['count']})"
            for n in sorted(rounds.get("overrides") or {}, key=int) if int(n) > rounds["count"]]


#: `rounds` keys that describe the schedule as a whole, not one round's training.
_SCHEDULE_KEYS = ("overrides", "count", "keep_fake_pairs")


def round_settings(rounds: dict[str, Any], n: int) -> dict[str, Any]:
    """Round ``n``'s settings: the `rounds` section with `rounds.overrides["n"]` applied (only round n sees it),
    schedule-wide keys dropped and the round count as ``rounds``. The workflow's rules and the sweep benchmark
    both read a round's settings here, so they cannot drift apart."""
    settings = {k: v for k, v in rounds.items() if k not in _SCHEDULE_KEYS}
    settings.update((rounds.get("overrides") or {}).get(str(int(n)), {}))
    settings["rounds"] = rounds["count"]
    return settings


# ---------------------------------------------------------------------------------------------------------
# What each stage reads from a resolved config: its slice, and the switches several keys decide together.
# The workflow's rules pass these as params (canonical JSON: a changed value reruns exactly the jobs it
# reaches); the CLI and the benchmarks build the same slices here.


def as_json(obj: Any) -> str:
    """A slice as one canonical JSON argument (sorted keys, no spaces): equal settings, equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def evaluated_rounds(config: dict[str, Any]) -> list[int]:
    """The rounds whose model is evaluated on the test split (`evaluate.every`): the cold start, every k-th round
    and the last. Each one costs embedding the test split and a retrieval pass; the rounds between still embed
    the train split, relabel and train, so self-training is unchanged and only its report thins out."""
    count, every = config["rounds"]["count"], config["evaluate"]["every"]
    return sorted({0, count, *range(every, count + 1, every)})


def results_dir(config: dict[str, Any]) -> str:
    """Where a run's artifacts go, relative to the working directory: results/<run>."""
    return f"results/{config['run']}"


def dataset_root(config: dict[str, Any]) -> str:
    """Where the manifest, the projections and the caches read images: the rendered synthetic world, or
    `dataset.root` (whose existence `dataset_errors` checked)."""
    from cvgl.data.registry import SYNTH

    return f"{results_dir(config)}/dataset" if config["dataset"]["name"] == SYNTH else config["dataset"]["root"]


def dataset_inputs(config: dict[str, Any]) -> list[str]:
    """What the manifest depends on: the rendered world, or a real dataset's split files in its published
    layout (`cvgl.data.registry`; FileNotFoundError names a missing one)."""
    from cvgl.data.registry import SYNTH, split_files

    name = config["dataset"]["name"]
    if name == SYNTH:
        return [dataset_root(config)]
    return [str(path) for path in split_files(name, dataset_root(config))]


def image_cache(config: dict[str, Any], split: str, view: str) -> str:
    """The image cache of one split and view: `cache/{split}-{view}.npy` (decoded pixels) or, with
    `data.cache: false`, `cache/{split}-{view}.files.parquet` (the files each read decodes again)."""
    return f"{results_dir(config)}/cache/{split}-{view}" + (".npy" if config["data"]["cache"] else ".files.parquet")


def manifest_slice(config: dict[str, Any]) -> dict[str, Any]:
    """The `dataset` section and `layout`, the synthetic world's layout (read only when dataset.name is synth)."""
    from cvgl.data.registry import synth_layout

    return {**config["dataset"], "layout": synth_layout(config["synth"])}


def translate_options(config: dict[str, Any]) -> dict[str, Any]:
    """The translator's options: `translate.cyclegan`, the seed and the device (threads: the job's own)."""
    return {**config["translate"]["cyclegan"], "seed": config["seed"], "device": config["device"]}


def train_slice(config: dict[str, Any], stage: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A training job's slice: seed, device, precision, model, optimiser, augmentation and its stage's settings.

    No `threads` and no `data.workers`: a job gets them on its command line (`job_settings`), so --cores
    scales them and changing either never reruns a stage."""
    return dict(seed=config["seed"], device=config["device"], precision=config["precision"], model=config["model"],
                optim=config["optim"], augment=config["augment"], stage=stage, **extra)


def intra_view_slice(config: dict[str, Any]) -> dict[str, Any]:
    """Cold start part 1 (`coldstart.intra`)."""
    return train_slice(config, config["coldstart"]["intra"])


def cross_view_slice(config: dict[str, Any]) -> dict[str, Any]:
    """Cold start part 2 (`coldstart.cross`); its learning-rate schedule continues after the intra-view epochs."""
    return train_slice(config, config["coldstart"]["cross"], schedule_offset=config["coldstart"]["intra"]["epochs"])


def round_slice(config: dict[str, Any], n: int | str) -> dict[str, Any]:
    """Self-training round n (`round_settings`: `rounds` with `rounds.overrides[n]` applied)."""
    return train_slice(config, round_settings(config["rounds"], int(n)))


def pseudo_label_slice(config: dict[str, Any], n: int | str) -> dict[str, Any]:
    """Round n's labelling: its round settings (t0, the round count) and the `labels` section."""
    return dict(round_settings(config["rounds"], int(n)), **config["labels"])


def job_settings(settings: dict[str, Any], threads: int | None = None, loader_workers: int | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """A slice with the job's own resources in it: `threads` (a rule's {threads}, which Snakemake scales to
    --cores), `data.workers` and `device` where given. These change a job's speed, never its result, so they
    travel on the command line instead of in the params."""
    out = dict(settings)
    if threads is not None:
        out["threads"] = threads
    if loader_workers is not None:
        out["data"] = {"workers": loader_workers}
    if device is not None:
        out["device"] = device
    return out


def fake_source(config: dict[str, Any]) -> str | None:
    """What the cold start pairs each panorama with, as the artifact folder under results/<run>/:

    - `translated`: its projection in satellite appearance (translate.method colour or cyclegan);
    - `projected`: its raw projection (translate.method: none; no translate job runs);
    - None: the panorama itself (coldstart.projection: false; no projection or translation job runs)."""
    if not config["coldstart"]["projection"]:
        return None
    return "projected" if config["translate"]["method"] == "none" else "translated"


def cold_start_fakes(config: dict[str, Any]) -> str | None:
    """The fakes (`fake_source`) the cross-view stage reads; None as well when it trains no epoch."""
    return fake_source(config) if config["coldstart"]["cross"]["epochs"] > 0 else None


def keeps_fake_pairs(config: dict[str, Any]) -> str | None:
    """The fakes every round keeps training on (`rounds.keep_fake_pairs`): only where the cold start had them."""
    return cold_start_fakes(config) if config["rounds"]["keep_fake_pairs"] else None


def fakes_argument(source: str, path: str) -> str:
    """The option that hands a training stage its fakes: `--translated DIR` or `--projected DIR` (raw)."""
    if source not in ("translated", "projected"):
        raise ValueError(f"fakes are translated or projected images, not {source!r}")
    return f"--{source} {path}"


def uses_prior(config: dict[str, Any]) -> bool:
    """The projection prior is computed and fused into every round's labels (labels.prior_weight > 0)."""
    return config["labels"]["prior_weight"] > 0


def caches_frozen_features(config: dict[str, Any]) -> bool:
    """The backbone is frozen (model.freeze: backbone), so its features are taken once per split and every
    round's embedding runs only the head and neck on them (evaluate.cache_frozen_features)."""
    return config["model"].get("freeze", "none") == "backbone" and config["evaluate"]["cache_frozen_features"]


def approximate_labels(config: dict[str, Any]) -> bool:
    """Labels search a FAISS index of that kind (an index job per round), instead of exact, blocked scores."""
    return config["labels"]["index"] != "Flat"


def embedding_symmetries(config: dict[str, Any], split: str) -> int:
    """Train embeddings (for the labels) average over `labels.symmetries`; the test split is embedded plainly."""
    return config["labels"]["symmetries"] if split == "train" else 1


def localize_job(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The `localize.<name>` entry of a resolved config (its defaults filled); KeyError names what exists."""
    jobs = config.get("localize") or {}
    if name not in jobs:
        raise KeyError(f"localize: no entry {name!r} in the config's localize section (have: {sorted(jobs) or 'none'})")
    return jobs[name]
