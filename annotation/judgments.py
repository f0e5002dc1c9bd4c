"""Judgments: strict validation of a submitted body, and the idempotent submit.

The validator is a plain function so it can be tested exhaustively (Hypothesis) and reused by the
page and the API. It is strict on purpose: a score is the JSON integer 5, not ``"5"``, ``5.0`` or
``true``, because a dataset silently built from coerced values is worse than a clear 400.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from feedback.platform.errors import DomainError
from feedback.platform.signals import judgment_recorded

from .distribution import assignment_get_own, assignment_hold_slot, task_lock_with_assignment
from .models import Assignment, Judgment, Rubric, TaskCompletion

ALLOWED_KEYS = ("ranking", "scores", "strength", "flags", "rationale", "time_spent_ms")
RATIONALE_MAX_CHARS = 5000
TIME_SPENT_MAX_MS = 24 * 3600 * 1000

Errors = dict[str, list[str]]


def _is_int(value: object) -> bool:
    # bool is a subclass of int in Python; JSON true is not a score.
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "a non-finite number"
        return "a float" if value.is_integer() else "a number with a fraction part"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(key: object) -> str:
    """A client's key as it can appear in an error path: lone surrogates (no UTF-8 encoding)
    escaped, so rendering the error cannot fail."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def _validate_ranking(
    ranking: object, completion_ids: list[int], errors: Errors
) -> list[list[int]]:
    if not isinstance(ranking, list) or not ranking:
        errors["ranking"] = ["Must be a non-empty list of groups of completion ids, best first."]
        return []
    groups: list[list[int]] = []
    seen: set[int] = set()
    known = set(completion_ids)
    for g, group in enumerate(ranking):
        if not isinstance(group, list) or not group:
            errors[f"ranking.{g}"] = [
                "Must be a non-empty list of completion ids (a tie if several), "
                f"got {_describe(group)}."
            ]
            continue
        clean: list[int] = []
        for i, cid in enumerate(group):
            path = f"ranking.{g}.{i}"
            if not _is_int(cid):
                errors[path] = [f"Must be an integer completion id, got {_describe(cid)}."]
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


def _validate_scores(
    scores: object, completion_ids: list[int], rubric: Rubric, errors: Errors
) -> dict[str, dict[str, int]]:
    if not isinstance(scores, dict):
        errors["scores"] = [f"Must be an object keyed by completion id, got {_describe(scores)}."]
        return {}
    clean: dict[str, dict[str, int]] = {}
    expected = {str(cid) for cid in completion_ids}
    for key in scores:
        if key not in expected:
            errors[f"scores.{_shown(key)}"] = [f"{_shown(key)} is not a completion of this task."]
    for cid in completion_ids:
        key = str(cid)
        if key not in scores:
            errors[f"scores.{key}"] = ["Missing: every completion needs a score on every axis."]
            continue
        per_axis = scores[key]
        if not isinstance(per_axis, dict):
            errors[f"scores.{key}"] = [
                f"Must be an object of axis scores, got {_describe(per_axis)}."
            ]
            continue
        for axis_key in per_axis:
            if axis_key not in rubric.axis_keys:
                errors[f"scores.{key}.{_shown(axis_key)}"] = [
                    f"Unknown axis; this rubric has {', '.join(rubric.axis_keys)}."
                ]
        clean_axes: dict[str, int] = {}
        for axis in rubric.axes:
            path = f"scores.{key}.{axis['key']}"
            value = per_axis.get(axis["key"])
            low, high = int(axis["min"]), int(axis["max"])
            if axis["key"] not in per_axis:
                errors[path] = ["Missing."]
            elif not _is_int(value):
                errors[path] = [f"Must be an integer from {low} to {high}, got {_describe(value)}."]
            elif not low <= value <= high:
                errors[path] = [f"Must be an integer from {low} to {high}, got {value}."]
            else:
                clean_axes[axis["key"]] = value
        clean[key] = clean_axes
    return clean


def judgment_validate(
    *, body: object, completion_ids: list[int], rubric: Rubric
) -> tuple[dict[str, Any], Errors]:
    """Check a submitted body against the task's completions and rubric.

    Returns ``(clean, errors)``; ``errors`` maps a dotted field path to its reasons and is empty
    when the body is valid. ``clean`` is canonical: ties sorted, flags sorted, defaults filled.
    """
    errors: Errors = {}
    if not isinstance(body, dict):
        return {}, {"body": [f"Must be a JSON object, got {_describe(body)}."]}
    for key in body:
        if key not in ALLOWED_KEYS:
            errors[_shown(key)] = [f"Unknown field; allowed: {', '.join(ALLOWED_KEYS)}."]
    for key in ("ranking", "scores", "time_spent_ms"):
        if key not in body:
            errors[key] = ["This field is required."]

    ranking = (
        _validate_ranking(body["ranking"], completion_ids, errors) if "ranking" in body else []
    )
    scores = (
        _validate_scores(body["scores"], completion_ids, rubric, errors) if "scores" in body else {}
    )

    strength = body.get("strength")
    top_is_single = bool(ranking) and len(ranking[0]) == 1
    if strength in (None, ""):
        strength = ""
        if top_is_single and "ranking" not in errors and "strength" not in errors:
            errors["strength"] = [
                "Required when one completion is ranked best: how much better is it than the "
                f"next? One of: {', '.join(rubric.strength_margins)}."
            ]
    elif not isinstance(strength, str) or strength not in rubric.strength_margins:
        errors["strength"] = [f"Must be one of: {', '.join(rubric.strength_margins)}."]
    elif ranking and not top_is_single:
        errors["strength"] = ["Must be empty when the best completions are tied."]

    flags = body.get("flags", [])
    clean_flags: list[str] = []
    if not isinstance(flags, list):
        errors["flags"] = [f"Must be a list of flag keys, got {_describe(flags)}."]
    else:
        for i, flag in enumerate(flags):
            if not isinstance(flag, str) or flag not in rubric.flag_keys:
                errors[f"flags.{i}"] = [f"Must be one of: {', '.join(rubric.flag_keys)}."]
            elif flag in clean_flags:
                errors[f"flags.{i}"] = [f"{flag} is listed twice."]
            else:
                clean_flags.append(flag)

    rationale = body.get("rationale", "")
    if rationale is None:
        rationale = ""
    if not isinstance(rationale, str):
        errors["rationale"] = [f"Must be a string, got {_describe(rationale)}."]
    elif len(rationale) > RATIONALE_MAX_CHARS:
        errors["rationale"] = [f"At most {RATIONALE_MAX_CHARS} characters, got {len(rationale)}."]
    elif "\x00" in rationale:
        errors["rationale"] = ["Must not contain NUL characters."]
    elif _shown(rationale) != rationale:
        errors["rationale"] = ["Must be valid Unicode (it holds a lone surrogate)."]

    time_spent = body.get("time_spent_ms")
    if "time_spent_ms" in body and (
        not _is_int(time_spent) or not 0 <= time_spent <= TIME_SPENT_MAX_MS
    ):
        errors["time_spent_ms"] = [
            f"Must be an integer number of milliseconds from 0 to {TIME_SPENT_MAX_MS}, "
            f"got {_describe(time_spent) if not _is_int(time_spent) else time_spent}."
        ]

    clean = {
        "ranking": ranking,
        "scores": scores,
        "strength": strength if isinstance(strength, str) else "",
        "flags": sorted(clean_flags),
        "rationale": rationale if isinstance(rationale, str) else "",
        "time_spent_ms": time_spent,
    }
    return clean, errors


def body_sha256(clean: dict[str, Any]) -> str:
    canonical = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def judgment_submit(
    *, assignment_id: object, annotator: AbstractBaseUser, body: object
) -> Judgment:
    """Store the annotator's judgment for an assignment. Idempotent.

    The same body again returns the stored judgment; a different body after a submit is a 409
    naming the judgment that exists; another annotator's assignment is a 404.
    """
    now = timezone.now()
    assignment = assignment_get_own(assignment_id=assignment_id, annotator=annotator)
    rubric = assignment.task.round.rubric
    completion_ids = list(
        TaskCompletion.objects.filter(task_id=assignment.task_id)
        .order_by("position")
        .values_list("completion_id", flat=True)
    )
    clean, errors = judgment_validate(body=body, completion_ids=completion_ids, rubric=rubric)
    if errors:
        raise DomainError(
            "; ".join(f"{path}: {' '.join(reasons)}" for path, reasons in errors.items()),
            fields=errors,
        )
    digest = body_sha256(clean)

    with transaction.atomic():
        task, assignment = task_lock_with_assignment(
            task_id=assignment.task_id, assignment_id=assignment.pk
        )
        existing = getattr(assignment, "judgment", None)
        if existing is not None:
            if existing.body_sha256 == digest:
                return existing
            raise DomainError(
                f"This assignment already has judgment {existing.pk}; a different body cannot "
                "replace it.",
                code="conflict",
                status=409,
                extra={"judgment": str(existing.pk)},
            )
        if assignment.status == Assignment.Status.SKIPPED:
            raise DomainError("This assignment was skipped.", code="skipped", status=409)
        assignment_hold_slot(task=task, assignment=assignment, now=now)

        judgment = Judgment.objects.create(
            assignment=assignment,
            task=task,
            annotator=annotator,
            rubric=rubric,
            ranking=clean["ranking"],
            scores=clean["scores"],
            strength=clean["strength"],
            flags=clean["flags"],
            rationale=clean["rationale"],
            time_spent_ms=clean["time_spent_ms"],
            body_sha256=digest,
        )
        assignment.status = Assignment.Status.SUBMITTED
        assignment.finished_at = now
        assignment.save(update_fields=["status", "finished_at"])
        task.leased_count -= 1
        task.submitted_count += 1
        if task.leased_count == 0:
            task.leases_expire_at = None
        task.save(update_fields=["leased_count", "submitted_count", "leases_expire_at"])
        round_id = task.round_id
        transaction.on_commit(lambda: judgment_recorded.send(sender=Judgment, round_id=round_id))
    return judgment
