"""The paper's per-dataset values (method.md §2, §11), filled in where the config leaves a key null.

`rounds.t0`, `project.fov_deg` and `project.band` default to the value the paper used for the dataset being
read: CVUSA bands with 175 degrees and t0 0.05, CVACT full panoramas with 170 degrees and t0 0.025, VIGOR full
panoramas with t0 0.035. The synthetic world counts as the layout it is written in.
"""

from __future__ import annotations

import copy
from typing import Any

PAPER = {
    "cvusa": {"t0": 0.05, "fov_deg": 175.0, "band": True},
    "cvact": {"t0": 0.025, "fov_deg": 170.0, "band": False},
    "vigor": {"t0": 0.035, "fov_deg": 170.0, "band": False},
}


def dataset_kind(config: dict[str, Any]) -> str:
    """cvusa | cvact | vigor: the layout the images are read in."""
    name = config["dataset"]["name"]
    return (config.get("synth") or {}).get("layout", "cvusa") if name == "synth" else name


def with_paper_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with null `rounds.t0`, `project.fov_deg`, `project.band` set to the paper's values."""
    out = copy.deepcopy(config)
    paper = PAPER[dataset_kind(out)]
    if out["rounds"].get("t0") is None:
        out["rounds"]["t0"] = paper["t0"]
    for key in ("fov_deg", "band"):
        if out["project"].get(key) is None:
            out["project"][key] = paper[key]
    return out
