"""The synthetic dataset on disk: ``write_synthetic`` renders the world(s) in the layout ``cfg.layout`` names.

``"cvusa"`` (the default, :mod:`cvgl.synth.cvusa`), ``"cvact"`` (:mod:`cvgl.synth.cvact`) or ``"vigor"``
(:mod:`cvgl.synth.vigor`); ``write_synthetic_cvusa`` always writes CVUSA. Either builds the dataset in a
temporary directory next to the root and moves it into place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cvgl.synth.config import LAYOUTS, SynthConfig
from cvgl.synth.cvact import write_cvact_dataset
from cvgl.synth.cvusa import write_cvusa_dataset
from cvgl.synth.vigor import write_vigor_dataset

#: What writes each layout into a directory: ``writer(cfg, out, seed, progress, workers)``.
LayoutWriter = Callable[[SynthConfig, Path, int, bool, int], None]
LAYOUT_WRITERS: dict[str, LayoutWriter] = {
    "cvusa": write_cvusa_dataset, "cvact": write_cvact_dataset, "vigor": write_vigor_dataset}


def write_synthetic(cfg: SynthConfig, root: Path, seed: int, progress: bool = True, workers: int = 1) -> None:
    """Generate the synthetic world(s) and write them in the layout ``cfg.layout`` under ``root``, atomically.

    Everything is built in ``<root>.tmp-<pid>`` and moved onto ``root`` at the end, so an interrupted run
    leaves no half-written dataset. Same ``cfg`` and ``seed`` give byte-identical files, whatever ``workers``
    (the number of processes rendering the locations; 1 renders them in this process).
    """
    if cfg.layout not in LAYOUT_WRITERS:
        raise ValueError(f"synth.layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
    _write_atomically(LAYOUT_WRITERS[cfg.layout], cfg, Path(root), seed, progress, workers)


def write_synthetic_cvusa(cfg: SynthConfig, root: Path, seed: int, progress: bool = True, workers: int = 1) -> None:
    """Generate the synthetic world and write it in the CVUSA layout under ``root`` (whatever ``cfg.layout``
    says), atomically; same ``cfg`` and ``seed`` give byte-identical files (see :func:`write_synthetic`)."""
    _write_atomically(write_cvusa_dataset, dataclasses.replace(cfg, layout="cvusa"), Path(root), seed, progress,
                      workers)


def _write_atomically(writer: LayoutWriter, cfg: SynthConfig, root: Path, seed: int, progress: bool,
                      workers: int) -> None:
    """Run ``writer(cfg, tmp, seed, progress, workers)`` into ``<root>.tmp-<pid>``, then move it onto ``root``."""
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        writer(cfg, tmp, seed, progress, workers)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``; an existing ``dst`` is set aside first and deleted afterwards."""
    old = dst.parent / f"{dst.name}.old-{os.getpid()}"
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
