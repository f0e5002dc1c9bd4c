"""Every export format, a module per family with its Arrow schema beside its row builder:
preference pairs (``pairs.py``: trl, trl_implicit; ``hh_rlhf.py``), fine-grained per-axis
ratings (``ultrafeedback.py``), KTO's unpaired examples (``kto.py``), SFT conversations from
demonstrations (``sft.py``) and the raw judgments (``judgments.py``)."""

from __future__ import annotations

from feedback.platform.errors import DomainError

from ..filters import FILTER_NAMES, ExportFilters
from .base import ExportFormat
from .hh_rlhf import HH_RLHF
from .judgments import JUDGMENTS
from .kto import KTO
from .pairs import TRL, TRL_IMPLICIT
from .sft import SFT
from .ultrafeedback import ULTRAFEEDBACK

FORMATS: dict[str, ExportFormat] = {
    spec.name: spec for spec in (TRL, TRL_IMPLICIT, HH_RLHF, ULTRAFEEDBACK, KTO, SFT, JUDGMENTS)
}


def export_format(fmt: str) -> ExportFormat:
    spec = FORMATS.get(fmt)
    if spec is None:
        raise DomainError(
            f"Unknown format {fmt!r}.",
            fields={"format": [f"Must be one of: {', '.join(FORMATS)}."]},
        )
    return spec


def export_check(*, fmt: str, filters: ExportFilters) -> ExportFormat:
    """The format, once it is known to honour every filter that is set."""
    spec = export_format(fmt)
    defaults = ExportFilters()
    errors = {
        name: [f"Does not apply to the {fmt} format."]
        for name in sorted(FILTER_NAMES - spec.honours)
        if getattr(filters, name) != getattr(defaults, name)
    }
    if errors:
        raise DomainError(f"Filters the {fmt} format cannot apply: {', '.join(errors)}.",
                          fields=errors)  # fmt: skip
    return spec
