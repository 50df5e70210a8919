"""The one place a config is checked and resolved: schema, defaults, the paper's per-dataset values, and every
rule that ties two keys together.

jsonschema's own messages point at the enclosing object and print the whole schema; here each problem is one
line such as `rounds.gt_ratio: 1.5 is greater than the maximum of 1` or `rounds.tresh: unknown key (allowed
here: count, epochs, ...)`, so a typo in a long config is found at once. The Snakefile calls `resolve_config`
before any rule exists; each `cvgl` stage checks its own slice again (`check_model`, `check_labels`), so a
combination of individually valid keys fails in seconds, never inside a job after hours of upstream work.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError
from jsonschema.validators import validator_for

JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
              type(None): "null"}


class ConfigError(ValueError):
    """A config that does not match the schema; the message lists every problem, one key path per line."""


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


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
    for key, sub in node.get("properties", {}).items():
        sub = _dereference(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill(instance[key], sub, root)


def _dereference(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema node a local `$ref` ("#/$defs/stage") points at, or `node` itself."""
    ref = node.get("$ref")
    if not ref:
        return node
    for part in ref.removeprefix("#/").split("/"):
        root = root[part]
    return root


def resolve_config(config: dict[str, Any], schema_path: str | Path, configfiles: Iterable[str | Path] = (),
                   demo_config: str | Path | None = None) -> dict[str, Any]:
    """The config every rule and stage sees: checked against the schema, its defaults filled in, null
    per-dataset keys set to the paper's value (`cvgl.defaults`), then every cross-key rule checked.

    `configfiles` are the files the config was merged from and `demo_config` the demo's `config.yaml`: the
    demo's settings (tuned on the synthetic world) may not sit under a real dataset's. Raises ConfigError
    listing every problem, one key path per line."""
    from cvgl.defaults import with_paper_defaults

    check_config(config, schema_path)
    resolved = with_paper_defaults(fill_defaults(config, load_schema(schema_path)))
    errors = demo_mix_errors(resolved, configfiles, demo_config) + cross_key_errors(resolved)
    if errors:
        raise ConfigError(f"invalid config ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  "
                          + "\n  ".join(errors))
    return resolved


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


def cross_key_errors(config: dict[str, Any]) -> list[str]:
    """Every rule between keys of a resolved config that a job would otherwise find out (empty = none)."""
    errors = dataset_errors(config["dataset"])
    errors += round_override_errors(config["rounds"])
    for check, section in ((check_model, "model"), (check_labels, "labels"), (check_translate, "translate")):
        try:
            check(config[section], config)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            errors.append(str(err))
    return errors


def dataset_errors(dataset: dict[str, Any]) -> list[str]:
    if dataset["name"] == "synth":
        return []
    root = dataset.get("root")
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
    from cvgl.models import check_backbone
    from cvgl.weights import hub_offline, hub_weights_cached, missing_weights_message

    weights = model.get("weights") if pretrained else None
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"model.weights: {weights} does not exist (or is not a file)")
    check_backbone(model)
    if (pretrained and model.get("pretrained") and not weights and hub_offline()
            and not hub_weights_cached(model["backbone"])):
        raise RuntimeError(missing_weights_message(model["backbone"]))


#: Label scores that only the exact, blocked matching computes.
EXACT_ONLY = ("prior_weight", "csls_k")


def check_labels(labels: dict[str, Any], config: dict[str, Any] | None = None) -> None:
    """The `labels` slice: the prior needs projections; the prior and CSLS need exact (Flat) scores."""
    if config is not None and labels.get("prior_weight", 0) > 0 and not config["coldstart"].get("projection", True):
        raise ValueError("labels.prior_weight: > 0 compares projections with tiles, but coldstart.projection "
                         "is false (no projection job runs); set labels.prior_weight: 0")
    for key in EXACT_ONLY:
        if labels.get(key, 0) > 0 and labels.get("index", "Flat") != "Flat":
            raise ValueError(f"labels.{key}: > 0 needs exact scores, but labels.index is {labels['index']!r}; "
                             f"use Flat or set labels.{key}: 0")
    check_index_strings(labels.get("index", "Flat"), labels.get("search"))


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
    if translate.get("method") != "cyclegan" or (config is not None
                                                 and not config["coldstart"].get("projection", True)):
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
