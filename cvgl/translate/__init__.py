"""Unpaired translation of BEV projections into satellite appearance (method.md §2.3).

A translator is fitted on two independently listed image sets (train projections, train satellite tiles),
never on pairs, and then maps every projection. `translate.method` selects the implementation.
"""

from cvgl.translate.colour import ColourTranslator, IdentityTranslator

TRANSLATORS = {"colour": ColourTranslator, "none": IdentityTranslator}


def make_translator(method: str) -> ColourTranslator | IdentityTranslator:
    if method not in TRANSLATORS:
        raise ValueError(f"translate.method must be one of {sorted(TRANSLATORS)}, got {method!r}")
    return TRANSLATORS[method]()


__all__ = ["ColourTranslator", "IdentityTranslator", "TRANSLATORS", "make_translator"]
