"""The dataset registry: what cvgl knows about each dataset, in one table.

Each entry (CVUSA, CVACT, VIGOR) names the split files a manifest depends on, builds the manifests from a root
in the published layout, holds the paper's values for the keys a config leaves null (`rounds.t0`,
`project.pano_size`, `size`, `fov_deg`, `band`) and says where its coordinates come from. The synthetic world
(`dataset.name: synth`) is rendered in one of these layouts (`synth.layout`) and then read, and defaulted,
exactly as that dataset. The workflow's rules (through `cvgl.config`) and `cvgl.data.stages.manifest_stage` ask
here; nothing else switches on a dataset's name.

The paper's values: CVUSA's 224x1232 bands completed to a full panorama and projected to 750 px with 175
degrees, t0 0.05; CVACT's 832x1664 panoramas to 1200 px with 170 degrees, t0 0.025; VIGOR's 1024x2048
panoramas to its 640 px tile side with 170 degrees, t0 0.035 (the paper projects no VIGOR panorama; this is
cvgl's choice, by analogy with CVACT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvgl.data import cvact, cvusa, vigor
from cvgl.data.manifest import Manifests

#: `dataset.name` of the built-in synthetic world.
SYNTH = "synth"


@dataclass(frozen=True)
class PaperDefaults:
    """The paper's value of each per-dataset key a config may leave null."""

    t0: float                   # rounds.t0: round 1's margin threshold
    pano_size: tuple[int, int]  # project.pano_size: (H, W) panoramas are resized to before projection
    size: int                   # project.size: the BEV side in px
    fov_deg: float              # project.fov_deg
    band: bool                  # project.band: panoramas are bands of a full panorama (CVUSA)

    def project(self) -> dict[str, Any]:
        """The `project` keys, as a config holds them (lists, not tuples)."""
        return {"pano_size": list(self.pano_size), "size": self.size, "fov_deg": self.fov_deg, "band": self.band}


@dataclass(frozen=True)
class Dataset:
    """One dataset's layout on disk, its manifests, its paper defaults and its coordinates."""

    name: str
    paper: PaperDefaults
    #: Where images' lat/lon come from (the manifest's log line says it; NaN where the source is absent).
    coordinates: str
    #: root -> the files the manifest reads (the manifest rule's inputs), each checked to exist.
    split_files: Callable[[Path], list[Path]]
    #: (root, the `dataset` section with defaults filled, gt_ratio, seed) -> manifests.
    build: Callable[[Path, dict[str, Any], float, int], Manifests]


def _cvusa_splits(root: Path) -> list[Path]:
    return [root / rel for rel in cvusa.SPLIT_FILES.values()]


def _build_cvusa(root: Path, dataset: dict[str, Any], gt_ratio: float, seed: int) -> Manifests:
    return cvusa.build_cvusa_manifests(root, gt_ratio, seed, strict=dataset["strict"],
                                       verify_images=dataset["verify_images"])


def _cvact_splits(root: Path) -> list[Path]:
    return [root / cvact.MAT_FILE]


def _build_cvact(root: Path, dataset: dict[str, Any], gt_ratio: float, seed: int) -> Manifests:
    return cvact.build_cvact_manifests(root, gt_ratio, seed, strict=dataset["strict"],
                                       include_test=dataset["include_test"], verify_images=dataset["verify_images"])


def _vigor_splits(root: Path) -> list[Path]:
    """Every split file of every city present (the adapter checks the ones the config selects)."""
    splits = sorted((root / "splits").glob("*/*.txt"))
    if not splits:
        raise FileNotFoundError(f"dataset.root: no VIGOR split files under {root / 'splits'}/<City>/")
    return splits


def vigor_cities(root: Path, dataset: dict[str, Any]) -> tuple[str, ...]:
    """`dataset.cities`, or (null) every city the root has split files for (the synthetic world writes two)."""
    return tuple(dataset["cities"] or sorted(p.name for p in (root / "splits").glob("*") if p.is_dir()))


def _build_vigor(root: Path, dataset: dict[str, Any], gt_ratio: float, seed: int) -> Manifests:
    return vigor.build_vigor_manifests(root, gt_ratio, seed, cities=vigor_cities(root, dataset),
                                       protocol=dataset["protocol"], strict=dataset["strict"],
                                       verify_images=dataset["verify_images"])


DATASETS: dict[str, Dataset] = {
    "cvusa": Dataset("cvusa", PaperDefaults(0.05, (224, 1232), 750, 175.0, True),
                     f"{cvusa.GPS_FILE} where the copy has it, else none", _cvusa_splits, _build_cvusa),
    "cvact": Dataset("cvact", PaperDefaults(0.025, (832, 1664), 1200, 170.0, False),
                     f"{cvact.MAT_FILE}'s {cvact.UTM_FIELD} (UTM zone {cvact.UTM_ZONE} south)", _cvact_splits,
                     _build_cvact),
    "vigor": Dataset("vigor", PaperDefaults(0.035, (1024, 2048), 640, 170.0, False),
                     "the file names (satellite_<lat>_<lon>.png, <id>,<lat>,<lon>,.jpg)", _vigor_splits,
                     _build_vigor),
}
#: Every accepted `dataset.name`.
NAMES = (SYNTH, *DATASETS)


def synth_layout(synth: dict[str, Any] | None) -> str:
    """The layout the synthetic world is written in: `synth.layout`, or the world's own default (the one
    place the registry reads `cvgl.synth`, through its public names)."""
    from cvgl.synth import SynthConfig

    return (synth or {}).get("layout") or SynthConfig.layout


def layout_of(dataset: dict[str, Any], synth: dict[str, Any] | None = None) -> str:
    """cvusa | cvact | vigor: the layout the images are read in (the synthetic world's, for synth)."""
    name = dataset["name"]
    if name == SYNTH:
        return synth_layout(synth)
    if name not in DATASETS:
        raise ValueError(f"dataset.name must be one of {', '.join(NAMES)}; got {name!r}")
    return name


def dataset_for(dataset: dict[str, Any], synth: dict[str, Any] | None = None) -> Dataset:
    """The registry entry that reads `dataset` (for synth: its layout's)."""
    return DATASETS[layout_of(dataset, synth)]


def split_files(name: str, root: str | Path) -> list[Path]:
    """The split files of a real dataset's root, every one checked to exist (an error names the missing file)."""
    if name not in DATASETS:
        raise ValueError(f"dataset.name: {name!r} has no split files (one of {', '.join(DATASETS)})")
    files = DATASETS[name].split_files(Path(root))
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"dataset.root: {path} does not exist ({name} layout expected)")
    return files
