"""Unpaired translation of BEV projections into satellite appearance (docs/method.md §2.3).

A translator is fitted on two independently listed image sets (train projections, train satellite tiles),
never on pairs, and then maps every projection. `translate.method` selects the implementation:
`cyclegan` (the paper's), `colour` (histogram matching, seconds) or `none` (raw projections, ablation row b).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cvgl.translate.colour import ColourTranslator, IdentityTranslator
from cvgl.translate.cyclegan import CycleGANTranslator

TRANSLATORS = {"colour": ColourTranslator, "none": IdentityTranslator, "cyclegan": CycleGANTranslator}

Translator = ColourTranslator | IdentityTranslator | CycleGANTranslator


def make_translator(method: str, options: dict[str, Any] | None = None, state_path: Path | None = None
                    ) -> Translator:
    """A fresh translator; `options` and `state_path` (per-epoch resume file) are the CycleGAN's."""
    if method not in TRANSLATORS:
        raise ValueError(f"translate.method must be one of {sorted(TRANSLATORS)}, got {method!r}")
    if method == "cyclegan":
        return CycleGANTranslator(options, state_path)
    return TRANSLATORS[method]()


__all__ = ["ColourTranslator", "CycleGANTranslator", "IdentityTranslator", "TRANSLATORS", "Translator",
           "make_translator"]
