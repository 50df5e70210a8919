"""Unpaired translation of BEV projections into satellite appearance (docs/method.md §2.3).

A translator is fitted on two independently listed image sets (train projections, train satellite tiles),
never on pairs, and then maps every projection. `translate.method` selects the implementation: `cyclegan` (the
paper's) or `colour` (histogram matching, seconds). `translate.method: none` (ablation row b) fits no
translator: no translate job runs and the cold start reads the raw projections (`cvgl.config.fake_source`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvgl.translate.colour import ColourTranslator
from cvgl.translate.cyclegan import CycleGANTranslator

TRANSLATORS = {"colour": ColourTranslator, "cyclegan": CycleGANTranslator}

Translator = ColourTranslator | CycleGANTranslator


def make_translator(method: str, options: dict[str, Any] | None = None, state_path: Path | None = None
                    ) -> Translator:
    """A fresh translator; `options` and `state_path` (per-epoch resume file) are the CycleGAN's."""
    if method == "none":
        raise ValueError("translate.method none: no translator to fit; the cold start reads the raw projections "
                         "(projected/) and the workflow runs no translate job")
    if method not in TRANSLATORS:
        raise ValueError(f"translate.method must be one of {sorted(TRANSLATORS)}, got {method!r}")
    if method == "cyclegan":
        return CycleGANTranslator(options, state_path)
    return TRANSLATORS[method]()


__all__ = ["ColourTranslator", "CycleGANTranslator", "TRANSLATORS", "Translator", "make_translator"]
