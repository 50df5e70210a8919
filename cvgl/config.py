"""Config checking against `workflow/schemas/config.schema.yaml`, with errors that name the key's path.

jsonschema's own messages point at the enclosing object and print the whole schema; here each problem is one
line such as `rounds.gt_ratio: 1.5 is greater than the maximum of 1` or `rounds.tresh: unknown key (allowed
here: count, epochs, ...)`, so a typo in a long config is found at once. The Snakefile calls `check_config`
before anything else (and before Snakemake fills in the schema's defaults).
"""

from __future__ import annotations

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
