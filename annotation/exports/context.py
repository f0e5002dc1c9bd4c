"""What every row of one export shares, settled before the first row: the filters, the struct
fields (every axis and flag of the rubrics read), how annotators are named (a pseudonym, or an
admin's choice of usernames), and their trust and weight in a consensus."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef

from ..models import Rubric
from .filters import UNKNOWN_TRUST, ExportFilters
from .records import judgments_selected

# An id or score a row does not have: 0 rather than null (ids and scales start at 1), see the
# package's docstring for why a column never changes type.
ABSENT = 0

# An annotator's weight in a consensus: equal by default, trust with ``weighting="trust"``.
Weights = Callable[[int], float]


def annotator_pseudonym(user_id: int) -> str:
    """The id an export names an annotator by: a keyed hash, stable across exports with the same
    ``PSEUDONYM_KEY``."""
    digest = hmac.new(
        settings.PSEUDONYM_KEY.encode(), f"annotator:{user_id}".encode(), hashlib.sha256
    )
    return "ann_" + digest.hexdigest()[:16]


def _equal(annotator_id: int) -> float:
    return 1.0


@dataclass(frozen=True)
class ExportContext:
    """The shared part of one export's rows (trust is only looked up when a filter needs it)."""

    filters: ExportFilters
    axes: tuple[str, ...]
    flags: tuple[str, ...]
    annotator: Callable[[int], str]
    trust: Mapping[int, float] = field(default_factory=dict)
    weights: Weights = _equal

    def score_struct(self, scores: Mapping[str, int]) -> dict[str, int]:
        return {axis: scores.get(axis, ABSENT) for axis in self.axes}

    def flag_struct(self, raised: Sequence[str]) -> dict[str, bool]:
        return {flag: flag in raised for flag in self.flags}


def _namer(pseudonymous: bool) -> Callable[[int], str]:
    if not pseudonymous:
        usernames = dict(get_user_model().objects.values_list("id", "username"))
        return lambda user_id: usernames.get(user_id, "")
    cache: dict[int, str] = {}

    def pseudonym(user_id: int) -> str:
        if user_id not in cache:
            cache[user_id] = annotator_pseudonym(user_id)
        return cache[user_id]

    return pseudonym


def export_context(
    *, filters: ExportFilters, pseudonymous: bool = True, rubrics: Iterable[Rubric] | None = None
) -> ExportContext:
    """The context of an export: struct fields from the rubrics of the judgments it reads (from
    every rubric when it reads none, so that an empty export still has a schema)."""
    if rubrics is None:
        used = judgments_selected(filters=filters).filter(rubric_id=OuterRef("pk"))
        rubrics = list(Rubric.objects.filter(Exists(used)).order_by("name", "version"))
        rubrics = rubrics or list(Rubric.objects.order_by("name", "version"))
    rubrics = list(rubrics)
    trust: dict[int, float] = {}
    if filters.min_trust is not None or filters.weighting == "trust":
        from ..quality import annotator_trust_scores

        trust = annotator_trust_scores(rounds=list(filters.rounds) or None)
    return ExportContext(
        filters=filters,
        axes=tuple(dict.fromkeys(key for r in rubrics for key in r.axis_keys)),
        flags=tuple(dict.fromkeys(key for r in rubrics for key in r.flag_keys)),
        annotator=_namer(pseudonymous),
        trust=trust,
        weights=(lambda uid: trust.get(uid, UNKNOWN_TRUST))
        if filters.weighting == "trust"
        else _equal,
    )
