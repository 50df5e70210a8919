"""Malformed configs are refused before any rule exists, each problem on one line naming the key."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from cvgl.config import (
    ConfigError,
    config_errors,
    load_config,
    load_schema,
    resolve_config,
    round_settings,
    typed_overrides,
)
from cvgl.models import CrossViewModel
from cvgl.synth import SynthConfig
from tests.dag import SNAKEMAKE

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = load_schema(SCHEMA_PATH)

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
    "a backbone timm does not know": ("model: {backbone: convnext_atoo}",
                                      ["model.backbone 'convnext_atoo': timm has no such model",
                                       "did you mean convnext_atto"]),
    "a pretrained tag timm does not list": ("model: {backbone: convnext_atto.in22k, pretrained: true}",
                                            ["model.backbone 'convnext_atto.in22k': timm has no such pretrained tag"]),
    "a model too small for its input": ("model: {satellite_size: [16, 16]}",
                                        ["model.backbone convnext_atto: a 16x16 input is too small"]),
    "a crop without its disc": ("model: {satellite_mask_radius: null, satellite_crop: true}",
                                ["model.satellite_crop needs model.satellite_mask_radius"]),
    "a FAISS factory string FAISS cannot build": ("labels: {index: 'IVF16,Flatt', prior_weight: 0.0, csls_k: 0}",
                                                   ["labels.index 'IVF16,Flatt': not a FAISS index factory string"]),
    "a CycleGAN too small for its PatchGAN": ("translate: {method: cyclegan, cyclegan: {size: 16}}",
                                              ["translate.cyclegan.size 16: too small"]),
    "an override of a round that does not run": ('rounds: {overrides: {"5": {epochs: 3}}}',
                                                 ["rounds.overrides.5: there is no round 5 (rounds.count is 2)"]),
    "the demo under real data": ("dataset: {name: cvact, root: .}",
                                 ["dataset.name: cvact is real data, but config.yaml (the demo",
                                  "--configfile configs/cvact.yaml"]),
}


def resolve_with(tmp_path: Path, override: str) -> str:
    """The error `load_config` raises for config.yaml + tests/tiny.yaml + `override`, as the Snakefile resolves
    them before any rule exists (tests/test_workflow.py checks that Snakemake prints it and stops)."""
    extra = tmp_path / "override.yaml"
    extra.write_text(override + "\n")
    with pytest.raises(ConfigError) as err:
        load_config([REPO / "config.yaml", REPO / "tests" / "tiny.yaml", extra])
    return str(err.value)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_config_is_refused_naming_the_key_and_the_problem(tmp_path: Path, case: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative dataset roots resolve against the run directory, as in Snakemake
    override, expected = MALFORMED[case]
    out = resolve_with(tmp_path, override)
    for fragment in expected:
        assert fragment in out, out
    assert "Failed validating" not in out  # our one-line messages, not jsonschema's schema dump
    assert not (tmp_path / "results").exists()  # nothing ran


def test_a_jobs_own_process_skips_only_the_checks_that_build_a_model(tmp_path: Path) -> None:
    """A cluster job's Snakemake process resolves with `check_builds=False` (its config was checked when it was
    submitted): the schema, defaults and cheap cross-key rules still hold there; the backbone check does not run."""
    config = merged(read_yaml(REPO / "config.yaml"), read_yaml(REPO / "tests" / "tiny.yaml"),
                    {"model": {"backbone": "convnext_atoo"}})
    with pytest.raises(ConfigError, match="timm has no such model"):
        resolve_config(config, SCHEMA_PATH)
    assert resolve_config(config, SCHEMA_PATH, check_builds=False)["model"]["backbone"] == "convnext_atoo"
    for bad in ({"rounds": {"tresh": 0.1}}, {"rounds": {"overrides": {"5": {"epochs": 3}}}}):
        with pytest.raises(ConfigError):
            resolve_config(merged(config, bad), SCHEMA_PATH, check_builds=False)


CHECK_IN_A_FRESH_PROCESS = """\
import sys
from cvgl.config import check_model
try:
    check_model({"backbone": sys.argv[1], "pretrained": False, "head": "gem", "dim": 32,
                 "ground_size": [32, 64], "satellite_size": [32, 32]})
except ValueError as err:
    print("error:", err)
print("timm imported:", "timm" in sys.modules)
"""


def test_a_passed_backbone_check_is_remembered_and_a_failed_one_is_not(tmp_path: Path) -> None:
    """`check_model` remembers a slice that passed (a marker under $CVGL_CACHE_DIR): the next process skips the
    timm import; a backbone timm lacks fails again, and leaves no marker."""
    env = {**os.environ, "CVGL_CACHE_DIR": str(tmp_path)}

    def check(backbone: str) -> str:
        proc = subprocess.run([sys.executable, "-c", CHECK_IN_A_FRESH_PROCESS, backbone], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    assert check("convnext_atto").endswith("timm imported: True\n")
    markers = list((tmp_path / "checked-models").iterdir())
    assert len(markers) == 1
    assert check("convnext_atto").endswith("timm imported: False\n")  # remembered
    for _ in range(2):
        out = check("convnext_atoo")
        assert "timm has no such model" in out and out.endswith("timm imported: True\n")
    assert list((tmp_path / "checked-models").iterdir()) == markers


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


DEMO_VARIANTS = ["tests/tiny.yaml", "configs/cyclegan.yaml", "configs/long-coldstart.yaml",
                 "configs/semi-supervised.yaml", "configs/supervised.yaml", "configs/training-free.yaml"]
PAPER_CONFIGS = ["cvusa", "cvact", "vigor"]


@pytest.mark.parametrize("name", DEMO_VARIANTS)
def test_every_demo_variant_resolves_over_config_yaml(name: str) -> None:
    config = merged(read_yaml(REPO / "config.yaml"), read_yaml(REPO / name))
    assert resolve_config(config, SCHEMA_PATH)["dataset"]["name"] == "synth"


def test_every_yaml_file_is_a_demo_variant_or_a_paper_config() -> None:
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml")}
    assert shipped == {n for n in DEMO_VARIANTS if n.startswith("configs/")} | {f"configs/{n}.yaml"
                                                                              for n in PAPER_CONFIGS}


def paper_config(name: str, root: Path) -> dict[str, Any]:
    """configs/<name>.yaml alone, with the dataset root the README's command passes with --config."""
    return resolve_config(merged(read_yaml(REPO / "configs" / f"{name}.yaml"), {"dataset": {"root": str(root)}}),
                          SCHEMA_PATH)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_each_paper_config_alone_resolves_to_the_papers_settings_and_builds_its_model(tmp_path: Path,
                                                                                      name: str) -> None:
    resolved = paper_config(name, tmp_path)
    model, rounds, labels = resolved["model"], resolved["rounds"], resolved["labels"]
    assert model["backbone"] == "convnext_base.fb_in22k_ft_in1k_384" and model["pretrained"]
    assert (model["head"], model["dim"], model["drop_path"], model["shared"]) == ("safa", None, 0.2, False)
    assert model["satellite_size"] == [384, 384] and model["satellite_mask_radius"] is None
    assert model["ground_size"] == ([384, 768] if name == "vigor" else [384, 384])
    assert resolved["optim"] == {"lr": 1e-4, "weight_decay": 0.01, "batch_size": 128}
    assert rounds["t0"] == {"cvusa": 0.05, "cvact": 0.025, "vigor": 0.035}[name]
    assert (rounds["lr"], rounds["labeled_ratio"], rounds["smoothing"]) == (1e-4, 0.4, 0.1)
    assert rounds["gt_ratio"] == (0.1 if name == "vigor" else 0.0)
    # cvgl's additions are off: no prior, CSLS, symmetries, crop, kept fake pairs
    assert (labels["prior_weight"], labels["csls_k"], labels["symmetries"]) == (0, 0, 1)
    assert not model["satellite_crop"] and not rounds["keep_fake_pairs"]
    gan = resolved["translate"]["cyclegan"]
    assert resolved["translate"]["method"] == "cyclegan"
    assert (gan["size"], gan["ngf"], gan["blocks"], gan["epochs"] + gan["epochs_decay"], gan["batch_size"]) == (
        320, 64, 9, 200, 1)
    assert resolved["augment"]["cutout_p"] == 0.5 and resolved["augment"]["gray_p"] == 0.2
    cold = resolved["coldstart"]
    expected_epochs = (0, 0) if name == "vigor" else (12, 16)
    assert (cold["intra"]["epochs"], cold["cross"]["epochs"]) == expected_epochs
    with torch.device("meta"):  # building is what is checked here: shapes, no weights
        built = CrossViewModel(model, load_pretrained=False)
    assert built.ground.dim == built.satellite.dim == 8 * 1024  # SAFA's 8 maps of ConvNeXt-B's 1024 channels


def test_the_demo_cannot_be_merged_under_a_paper_config(tmp_path: Path) -> None:
    """The README's old real-data command mixed config.yaml's demo settings into the paper's; now it stops."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n",
           "--cores", "1", "--configfile", str(REPO / "config.yaml"), str(REPO / "configs" / "cvusa.yaml"),
           "--config", f"dataset={{root: {tmp_path}}}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "dataset.name: cvusa is real data, but config.yaml (the demo" in proc.stdout + proc.stderr


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


def test_nested_config_strings_are_typed_by_the_schema() -> None:
    """Snakemake hands a nested `--config key='{...}'` over with every scalar a string (YAML's base loader): each
    is typed where the schema wants no string; names, paths and what fits no accepted type stay strings."""
    as_snakemake_reads = {"run": "supervised", "rounds": {"gt_ratio": "1.0", "overrides": {"2": {"epochs": "5"}}},
                          "data": {"cache": "false"}, "dataset": {"root": "/data/CVUSA"},
                          "model": {"ground_size": ["32", "128"], "weights": "null"},
                          "labels": {"symmetries": "8", "index": "HNSW32", "search": "efSearch=16"},
                          "optim": {"batch_size": "eight", "lr": "true"}}
    assert typed_overrides(as_snakemake_reads) == {
        "run": "supervised", "rounds": {"gt_ratio": 1.0, "overrides": {"2": {"epochs": 5}}},
        "data": {"cache": False}, "dataset": {"root": "/data/CVUSA"},
        "model": {"ground_size": [32, 128], "weights": None},
        "labels": {"symmetries": 8, "index": "HNSW32", "search": "efSearch=16"},
        "optim": {"batch_size": "eight", "lr": "true"}}  # no integer, no number: left for the schema check


def test_the_readmes_nested_config_override_reaches_the_jobs(tmp_path: Path) -> None:
    """The README's `snakemake --cores 2 --config run=supervised rounds='{"gt_ratio": 1.0}'` (here with
    `data='{cache: false}'` too), dry: the jobs get the number and the boolean, not the strings."""
    proc = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "-n",
                           "-p", "--configfile", str(REPO / "config.yaml"), "--config", "run=supervised",
                           'rounds={"gt_ratio": 1.0}', "data={cache: false}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--gt-ratio 1.0 " in proc.stdout and "results/supervised/cache/train-ground.files.parquet" in proc.stdout
