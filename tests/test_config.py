"""Malformed configs fail when the DAG is built (a dry run), each with one line naming the key and the problem."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cvgl.config import config_errors, load_schema, round_settings
from cvgl.data.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")

# (override merged over config.yaml + tests/tiny.yaml, fragments the error output must contain)
MALFORMED = {
    "unknown top-level key": ("colour_space: lab", ["colour_space: unknown key", "allowed here:"]),
    "unknown nested key": ("rounds: {tresh: 0.1}", ["rounds.tresh: unknown key"]),
    "misspelt world knob": ("synth: {tile_sise: 32}", ["synth.tile_sise: unknown key", "did you mean tile_size?"]),
    "wrong type": ("optim: {batch_size: eight}", ["optim.batch_size: expected integer, got string 'eight'"]),
    "negative epochs": ("coldstart: {cross: {epochs: -2, smoothing: 0.3}}",
                        ["coldstart.cross.epochs: -2 is less than the minimum of 0"]),
    "gt_ratio above 1": ("rounds: {gt_ratio: 1.5}", ["rounds.gt_ratio: 1.5 is greater than the maximum of 1"]),
    "bad device": ("device: gpu", ["device: 'gpu' is not one of auto, cpu, cuda"]),
    "bad translate.method": ("translate: {method: pix2pix}",
                             ["translate.method: 'pix2pix' is not one of colour, cyclegan, none"]),
    "bad layout": ("synth: {layout: kitti}", ["synth.layout: 'kitti' is not one of cvusa, cvact, vigor"]),
    "bad round override": ('rounds: {overrides: {"2": {epoks: 3}}}', ["rounds.overrides.2.epoks: unknown key",
                                                                      "did you mean epochs?"]),
    "missing dataset.root": ("dataset: {name: cvusa, root: /nonexistent/cvusa}",
                             ["dataset.root: /nonexistent/cvusa is not a directory"]),
    "prior without projections": ("coldstart: {projection: false}",
                                  ["labels.prior_weight: > 0 compares projections", "coldstart.projection"]),
    "prior with an approximate index": ("labels: {index: 'IVF4,Flat', prior_weight: 1.0}",
                                        ["labels.prior_weight: > 0 needs exact scores", "IVF4,Flat"]),
    "CSLS with an approximate index": ("labels: {index: 'IVF4,Flat', prior_weight: 0.0, csls_k: 10}",
                                       ["labels.csls_k: > 0 needs exact scores", "IVF4,Flat"]),
    "missing model.weights": ("model: {weights: /nonexistent/convnext_atto.safetensors}",
                              ["model.weights: /nonexistent/convnext_atto.safetensors does not exist"]),
}


def dry_run(workdir: Path, override: str) -> subprocess.CompletedProcess[str]:
    extra = workdir / "override.yaml"
    extra.write_text(override + "\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n", "--cores", "1",
           "--configfile", str(REPO / "config.yaml"), str(REPO / "tests" / "tiny.yaml"), str(extra)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_config_fails_the_dry_run_naming_the_key_and_the_problem(tmp_path: Path, case: str) -> None:
    override, expected = MALFORMED[case]
    proc = dry_run(tmp_path, override)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    for fragment in expected:
        assert fragment in out, out[-3000:]
    assert "Failed validating" not in out  # our one-line messages, not jsonschema's schema dump
    assert not (tmp_path / "results").exists()  # nothing ran


def merged(*overrides: dict[str, Any]) -> dict[str, Any]:
    """Config files merged as Snakemake merges them: nested mappings key by key, a later file wins."""
    out: dict[str, Any] = {}
    for layer in overrides:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("name", ["tests/tiny.yaml", *sorted(str(p.relative_to(REPO))
                                                             for p in (REPO / "configs").glob("*.yaml"))])
def test_every_shipped_config_passes_the_schema(name: str) -> None:
    config = merged(read_yaml(REPO / "config.yaml"), read_yaml(REPO / name))
    assert config_errors(config, SCHEMA) == []


def test_several_problems_are_reported_together_sorted_by_key_path() -> None:
    config = merged(read_yaml(REPO / "config.yaml"), {"device": "gpu", "rounds": {"gt_ratio": 2}, "oops": 1})
    errors = config_errors(config, SCHEMA)
    assert [e.split(":")[0] for e in errors] == ["device", "oops", "rounds.gt_ratio"]


def object_paths_without_closed_keys(node: Any, path: str = "") -> list[str]:
    """Schema objects that list properties but would accept unknown keys (no additionalProperties)."""
    if not isinstance(node, dict):
        return []
    found = [path or "(top)"] if "properties" in node and "additionalProperties" not in node else []
    for key, child in node.items():
        children = child.items() if key in ("properties", "$defs") and isinstance(child, dict) else []
        found += [p for name, sub in children for p in object_paths_without_closed_keys(sub, f"{path}.{name}")]
        if key in ("additionalProperties", "items") and isinstance(child, dict):
            found += object_paths_without_closed_keys(child, f"{path}[{key}]")
    return found


def test_every_object_in_the_schema_rejects_unknown_keys() -> None:
    assert object_paths_without_closed_keys(SCHEMA) == []
    assert object_paths_without_closed_keys({"properties": {"a": {"properties": {}}}}) == ["(top)", ".a"]


def test_the_schema_lists_exactly_the_synthetic_worlds_knobs() -> None:
    assert set(SCHEMA["properties"]["synth"]["properties"]) == {f.name for f in dataclasses.fields(SynthConfig)}


def test_a_round_override_reaches_only_its_round_and_leaves_the_config_untouched() -> None:
    rounds = {"count": 3, "epochs": 4, "lr": 1e-4, "t0": 0.05, "keep_fake_pairs": True,
              "overrides": {"2": {"epochs": 7, "t0": 0.08}}}
    before = copy.deepcopy(rounds)
    first, second, third = (round_settings(rounds, n) for n in (1, "2", 3))
    assert first == third == {"epochs": 4, "lr": 1e-4, "t0": 0.05, "rounds": 3}
    assert second == {"epochs": 7, "lr": 1e-4, "t0": 0.08, "rounds": 3}
    assert rounds == before
    assert round_settings({"count": 1, "epochs": 2, "overrides": None}, 1) == {"epochs": 2, "rounds": 1}
