"""The task families: one module each, and this registry (`task:` in params.yaml -> family).
Adding a family costs its module, its schema in `ablab.config.families` and one line here."""

from __future__ import annotations

from ablab.families.adapt import Adapt
from ablab.families.base import CollapsedError, DivergedError, Family, Fit
from ablab.families.classify import Classify
from ablab.families.generate import Generate
from ablab.families.masked_lm import MaskedLm
from ablab.families.pseudo_label import PseudoLabel
from ablab.families.reconstruct import Reconstruct
from ablab.families.regress import Regress
from ablab.families.tag import Tag
from ablab.families.translate import Translate

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Classify(),
        Regress(),
        Translate(),
        Tag(),
        Reconstruct(),
        Generate(),
        PseudoLabel(),
        Adapt(),
        MaskedLm(),
    )  # fmt: skip
}


def family(name: str) -> Family:
    """The family registered as `name` (config has already refused an unknown one)."""
    return FAMILIES[name]


__all__ = ["FAMILIES", "CollapsedError", "DivergedError", "Family", "Fit", "family"]
