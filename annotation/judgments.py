"""Judgments: strict validation of a submitted body, and the idempotent submit.

The validator is a plain function so it can be tested exhaustively (Hypothesis) and reused by the
page and the API. It is strict (``annotation.strict_json``); the ranking and the scores are
checked against the rubric by ``annotation.rubrics``, the rest of the body here.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from feedback.platform.errors import DomainError
from feedback.platform.signals import judgment_recorded
from feedback.platform.strict import unknown_keys

from .distribution import assignment_get_own, assignment_hold_slot, task_lock_with_assignment
from .models import Assignment, ComparisonTask, Judgment, Rubric, TaskCompletion
from .rubrics import SLACK, ranking_validate, scores_validate
from .strict_json import Errors, described, errors_raise, is_strict_int, shown

ALLOWED_KEYS = ("ranking", "scores", "strength", "flags", "rationale", "time_spent_ms")
RATIONALE_MAX_CHARS = 5000
TIME_SPENT_MAX_MS = 24 * 3600 * 1000


def judgment_validate(
    *, body: object, completion_ids: list[int], rubric: Rubric
) -> tuple[dict[str, Any], Errors]:
    """Check a submitted body against the task's completions and rubric.

    Returns ``(clean, errors)``; ``errors`` maps a dotted field path to its reasons and is empty
    when the body is valid. ``clean`` is canonical: ties sorted, flags sorted, defaults filled.
    """
    errors: Errors = {}
    if not isinstance(body, dict):
        return {}, {"body": [f"Must be a JSON object, got {described(body)}."]}
    errors.update(unknown_keys(body, ALLOWED_KEYS))
    for key in ("ranking", "scores", "time_spent_ms"):
        if key not in body:
            errors[key] = ["This field is required."]
    ranking = (
        ranking_validate(ranking=body["ranking"], completion_ids=completion_ids, errors=errors)
        if "ranking" in body
        else []
    )
    scores = (
        scores_validate(
            scores=body["scores"], completion_ids=completion_ids, rubric=rubric, errors=errors
        )
        if "scores" in body
        else {}
    )
    clean = {
        "ranking": ranking,
        "scores": scores,
        "strength": _strength_validate(body.get("strength"), ranking, rubric, errors),
        "flags": _flags_validate(body.get("flags", []), rubric, errors),
        "rationale": _rationale_validate(body.get("rationale", ""), errors),
        "time_spent_ms": body.get("time_spent_ms"),
    }
    if "time_spent_ms" in body:
        _time_spent_validate(body["time_spent_ms"], errors)
    return clean, errors


def _strength_validate(
    strength: object, ranking: list[list[int]], rubric: Rubric, errors: Errors
) -> str:
    """How much better the single best completion is than the next: required then, and empty
    when the best ones tie."""
    top_is_single = bool(ranking) and len(ranking[0]) == 1
    if strength in (None, ""):
        if top_is_single and "ranking" not in errors and "strength" not in errors:
            errors["strength"] = [
                "Required when one completion is ranked best: how much better is it than the "
                f"next? One of: {', '.join(rubric.strength_margins)}."
            ]
        return ""
    if not isinstance(strength, str) or strength not in rubric.strength_margins:
        errors["strength"] = [f"Must be one of: {', '.join(rubric.strength_margins)}."]
    elif ranking and not top_is_single:
        errors["strength"] = ["Must be empty when the best completions are tied."]
    return strength if isinstance(strength, str) else ""


def _flags_validate(flags: object, rubric: Rubric, errors: Errors) -> list[str]:
    """The rubric's flag keys, each at most once; returned sorted. A list far longer than the
    rubric's flags is refused by its length, before any entry is read."""
    clean: list[str] = []
    if not isinstance(flags, list):
        errors["flags"] = [f"Must be a list of flag keys, got {described(flags)}."]
        return clean
    if len(flags) > len(rubric.flag_keys) + SLACK:
        errors["flags"] = [
            f"At most {len(rubric.flag_keys)} entries (this rubric has {len(rubric.flag_keys)} "
            f"flags, each listed once); got {len(flags)}."
        ]
        return clean
    for i, flag in enumerate(flags):
        if not isinstance(flag, str) or flag not in rubric.flag_keys:
            errors[f"flags.{i}"] = [f"Must be one of: {', '.join(rubric.flag_keys)}."]
        elif flag in clean:
            errors[f"flags.{i}"] = [f"{flag} is listed twice."]
        else:
            clean.append(flag)
    return sorted(clean)


def _rationale_validate(rationale: object, errors: Errors) -> str:
    if rationale is None:
        return ""
    if not isinstance(rationale, str):
        errors["rationale"] = [f"Must be a string, got {described(rationale)}."]
        return ""
    if len(rationale) > RATIONALE_MAX_CHARS:
        errors["rationale"] = [f"At most {RATIONALE_MAX_CHARS} characters, got {len(rationale)}."]
    elif "\x00" in rationale:
        errors["rationale"] = ["Must not contain NUL characters."]
    elif shown(rationale) != rationale:
        errors["rationale"] = ["Must be valid Unicode (it holds a lone surrogate)."]
    return rationale


def _time_spent_validate(time_spent: object, errors: Errors) -> None:
    if not is_strict_int(time_spent) or not 0 <= time_spent <= TIME_SPENT_MAX_MS:
        errors["time_spent_ms"] = [
            f"Must be an integer number of milliseconds from 0 to {TIME_SPENT_MAX_MS}, "
            f"got {described(time_spent) if not is_strict_int(time_spent) else time_spent}."
        ]


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
    errors_raise(errors)
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
        return _judgment_record(
            task=task, assignment=assignment, annotator=annotator, rubric=rubric, clean=clean,
            digest=digest, now=now,
        )  # fmt: skip


def _judgment_record(
    *,
    task: ComparisonTask,
    assignment: Assignment,
    annotator: AbstractBaseUser,
    rubric: Rubric,
    clean: dict[str, Any],
    digest: str,
    now: datetime,
) -> Judgment:
    """Store the judgment and move its slot from leased to submitted (the caller holds the
    locks); automatic rounds hear of it once the transaction commits."""
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
        # Kept with the decision: position bias is measured from it (``position_bias``).
        display_order=assignment.display_order,
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
