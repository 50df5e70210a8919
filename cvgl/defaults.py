"""The paper's per-dataset values, filled in where the config leaves a key null.

`rounds.t0` and the projection (`project.pano_size`, `size`, `fov_deg`, `band`) default to what the paper used
for the dataset being read: CVUSA's 224x1232 bands completed to a full panorama and projected to 750 px with
175 degrees, t0 0.05; CVACT's 832x1664 panoramas to 1200 px with 170 degrees, t0 0.025; VIGOR's 1024x2048
panoramas to its 640 px tile side with 170 degrees, t0 0.035 (the paper projects no VIGOR panorama; this is
cvgl's choice, by analogy with CVACT). The synthetic world counts as the layout it is written in.
"""

from __future__ import annotations

import copy
from typing import Any

PAPER = {
    "cvusa": {"t0": 0.05, "pano_size": [224, 1232], "size": 750, "fov_deg": 175.0, "band": True},
    "cvact": {"t0": 0.025, "pano_size": [832, 1664], "size": 1200, "fov_deg": 170.0, "band": False},
    "vigor": {"t0": 0.035, "pano_size": [1024, 2048], "size": 640, "fov_deg": 170.0, "band": False},
}
#: The `project` keys a null stands for the paper's value of.
PROJECTION_KEYS = ("pano_size", "size", "fov_deg", "band")


def dataset_kind(config: dict[str, Any]) -> str:
    """cvusa | cvact | vigor: the layout the images are read in."""
    name = config["dataset"]["name"]
    return (config.get("synth") or {}).get("layout", "cvusa") if name == "synth" else name


def with_paper_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with null `rounds.t0` and `project` keys set to the paper's values for the dataset."""
    out = copy.deepcopy(config)
    paper = PAPER[dataset_kind(out)]
    if out["rounds"].get("t0") is None:
        out["rounds"]["t0"] = paper["t0"]
    for key in PROJECTION_KEYS:
        if out["project"].get(key) is None:
            out["project"][key] = paper[key]
    return out
