"""Rubrics: the version a new round is judged under, a rubric's page, and checking an answer
against one.

A rubric is versioned and names the axes (each an integer scale with guidelines), the flags and
the strength labels an annotator answers with. ``ranking_validate`` and ``scores_validate`` are
the checks every answer to a task goes through, whoever gives it: an annotator's judgment
(``annotation.judgments``) or an admin's reference answer to a gold task (``annotation.gold``).
Each adds what is wrong to ``errors`` under a dotted path and returns the canonical value.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from feedback.platform.errors import MAX_FIELDS, DomainError

from .models import Round, Rubric
from .strict_json import Errors, described, is_strict_int, shown

DEFAULT_RUBRIC = "3H"
# Entries beyond what a task shows that still get an error each; a longer list is refused by its
# length alone (as many as an error body shows).
SLACK = MAX_FIELDS


def rubric_list() -> QuerySet[Rubric]:
    """Every rubric version (the choices a round may be opened with)."""
    return Rubric.objects.order_by("name", "version")


def rubric_current(*, name: str = DEFAULT_RUBRIC) -> Rubric:
    """The newest version of the rubric called ``name``: what a new round is judged under."""
    rubric = Rubric.objects.filter(name=name).order_by("-version").first()
    if rubric is None:
        raise DomainError(f"No rubric named {name!r}.", fields={"rubric": ["Does not exist."]})
    return rubric


def rubric_detail(*, rubric_id: int) -> tuple[Rubric, list[Round], list[Rubric]]:
    """A rubric, the rounds judged under it (newest first), and every version of its name."""
    rubric = Rubric.objects.filter(pk=rubric_id).first()
    if rubric is None:
        raise DomainError("No such rubric.", code="not_found", status=404)
    rounds = list(Round.objects.filter(rubric=rubric).order_by("-number"))
    versions = list(Rubric.objects.filter(name=rubric.name).order_by("-version"))
    return rubric, rounds, versions


def ranking_validate(
    *, ranking: object, completion_ids: list[int], errors: Errors
) -> list[list[int]]:
    """Groups of completion ids, best first (several in a group are a tie), each of the task's
    completions exactly once. Returns the groups with each tie sorted.

    A list longer than the task has completions is refused by its length, before any entry is
    read: a hostile million-entry ranking costs one ``len``."""
    if not isinstance(ranking, list) or not ranking:
        errors["ranking"] = ["Must be a non-empty list of groups of completion ids, best first."]
        return []
    if _too_long(ranking, "ranking", len(completion_ids), errors):
        return []
    groups: list[list[int]] = []
    seen: set[int] = set()
    known = set(completion_ids)
    for g, group in enumerate(ranking):
        if not isinstance(group, list) or not group:
            errors[f"ranking.{g}"] = [
                "Must be a non-empty list of completion ids (a tie if several), "
                f"got {described(group)}."
            ]
            continue
        if _too_long(group, f"ranking.{g}", len(completion_ids), errors):
            continue
        clean: list[int] = []
        for i, cid in enumerate(group):
            path = f"ranking.{g}.{i}"
            if not is_strict_int(cid):
                errors[path] = [f"Must be an integer completion id, got {described(cid)}."]
            elif cid not in known:
                errors[path] = [f"{cid} is not a completion of this task."]
            elif cid in seen:
                errors[path] = [f"Completion {cid} is ranked more than once."]
            else:
                seen.add(cid)
                clean.append(cid)
        groups.append(sorted(clean))
    missing = [cid for cid in completion_ids if cid not in seen]
    if missing and not any(key.startswith("ranking") for key in errors):
        errors["ranking"] = [f"Every completion must be ranked; missing: {missing}."]
    return groups


def _too_long(value: list[Any] | dict[Any, Any], path: str, shows: int, errors: Errors) -> bool:
    """Whether a ranking, a tie or the scores hold far more entries than the task shows
    completions (then the error says so, with the count). A few too many get an error each,
    naming what is wrong with each; past ``SLACK`` more, only the count is worth saying."""
    if len(value) <= shows + SLACK:
        return False
    errors[path] = [
        f"At most {shows} entries (this task shows {shows} completions); got {len(value)}."
    ]
    return True


def scores_validate(
    *, scores: object, completion_ids: list[int], rubric: Rubric, errors: Errors
) -> dict[str, dict[str, int]]:
    """{completion id: {axis: score}}: every completion of the task scored on every axis of the
    rubric, each score an integer on the axis's scale. Returns the scores keyed as given."""
    if not isinstance(scores, dict):
        errors["scores"] = [f"Must be an object keyed by completion id, got {described(scores)}."]
        return {}
    if _too_long(scores, "scores", len(completion_ids), errors):
        return {}
    clean: dict[str, dict[str, int]] = {}
    expected = {str(cid) for cid in completion_ids}
    for key in scores:
        if key not in expected:
            errors[f"scores.{shown(key)}"] = [f"{shown(key)} is not a completion of this task."]
    for cid in completion_ids:
        key = str(cid)
        if key not in scores:
            errors[f"scores.{key}"] = ["Missing: every completion needs a score on every axis."]
            continue
        per_axis = scores[key]
        if not isinstance(per_axis, dict):
            errors[f"scores.{key}"] = [
                f"Must be an object of axis scores, got {described(per_axis)}."
            ]
            continue
        clean[key] = _axes_validate(per_axis, path=f"scores.{key}", rubric=rubric, errors=errors)
    return clean


def _axes_validate(
    per_axis: dict[object, object], *, path: str, rubric: Rubric, errors: Errors
) -> dict[str, int]:
    """One completion's scores: no axis the rubric lacks, each of its axes in range."""
    if len(per_axis) > len(rubric.axes) + SLACK:
        errors[path] = [
            f"At most {len(rubric.axes)} entries (this rubric has {len(rubric.axes)} axes); "
            f"got {len(per_axis)}."
        ]
        return {}
    for axis_key in per_axis:
        if axis_key not in rubric.axis_keys:
            errors[f"{path}.{shown(axis_key)}"] = [
                f"Unknown axis; this rubric has {', '.join(rubric.axis_keys)}."
            ]
    clean: dict[str, int] = {}
    for axis in rubric.axes:
        axis_path = f"{path}.{axis['key']}"
        value = per_axis.get(axis["key"])
        low, high = int(axis["min"]), int(axis["max"])
        if axis["key"] not in per_axis:
            errors[axis_path] = ["Missing."]
        elif not is_strict_int(value):
            errors[axis_path] = [
                f"Must be an integer from {low} to {high}, got {described(value)}."
            ]
        elif not low <= value <= high:
            errors[axis_path] = [f"Must be an integer from {low} to {high}, got {value}."]
        else:
            clean[axis["key"]] = value
    return clean
