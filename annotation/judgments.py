"""Judgments: strict validation of a submitted body, and the idempotent submit.

The validator is a plain function so it can be tested exhaustively (Hypothesis) and reused by the
page and the API. It is strict (``annotation.strict_json``); the ranking and the scores are
checked against the rubric by ``annotation.rubrics``, the rest of the body here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from feedback.platform.errors import DomainError
from feedback.platform.signals import judgment_recorded
from feedback.platform.strict import unknown_keys

from .distribution import assignment_hold_slot, task_lock_with_assignment
from .models import Assignment, ComparisonTask, Judgment, Round, Rubric, TaskCompletion
from .raw_sql import from_sql_json, rubric_cached, sql_datetime, sql_json, sql_uuid
from .rubrics import SLACK, ranking_validate, scores_validate
from .strict_json import Errors, described, errors_raise, is_strict_int, shown

ALLOWED_KEYS = (
    "ranking", "scores", "strength", "flags", "rationale", "time_spent_ms", "none_acceptable",
)  # fmt: skip
# The rubric flag that says what ``none_acceptable`` says ("Every answer is unacceptable").
# They are one statement: either one sent sets both (the flag where the rubric has it), so
# the flag filters and the outcome always agree, and a body sent before the field existed
# means what it meant then.
ALL_BAD_FLAG = "all_bad"
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
    clean["none_acceptable"] = _none_acceptable_validate(body, clean["flags"], rubric, errors)
    if "time_spent_ms" in body:
        _time_spent_validate(body["time_spent_ms"], errors)
    return clean, errors


def _none_acceptable_validate(
    body: dict[str, Any], flags: list[str], rubric: Rubric, errors: Errors
) -> bool:
    """Whether no answer is acceptable: a JSON boolean, false when absent, true too when the
    ``all_bad`` flag is raised; when true, the flag is added to ``flags`` where the rubric has
    it (see ``ALL_BAD_FLAG``). The ranking is still required: the order among bad answers
    still says something."""
    value = body.get("none_acceptable", False)
    if not isinstance(value, bool):
        errors["none_acceptable"] = [f"Must be true or false, got {described(value)}."]
        return False
    said = value or ALL_BAD_FLAG in flags
    if said and ALL_BAD_FLAG in rubric.flag_keys and ALL_BAD_FLAG not in flags:
        flags.append(ALL_BAD_FLAG)
        flags.sort()
    return said


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
    """The hash of a canonical body. ``none_acceptable`` counts only where nothing else says
    it (true, and no ``all_bad`` flag), so the hash of a body sent before the field existed
    is unchanged: a resubmit of it still matches the stored judgment."""
    hashed = {key: value for key, value in clean.items() if key != "none_acceptable"}
    if clean.get("none_acceptable") and ALL_BAD_FLAG not in clean["flags"]:
        hashed["none_acceptable"] = True
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _SlowPath(Exception):
    """The fast path's statements found the assignment not live-leased: undo them."""


def _submit_context(*, assignment_id: object, annotator: AbstractBaseUser) -> tuple[Any, ...]:
    """One statement: the caller's own assignment with its task's round, rubric version and
    completion ids (position order); a 404 when it is not theirs (or does not exist)."""
    if not isinstance(assignment_id, uuid.UUID):
        assignment_id = uuid.UUID(str(assignment_id))
    a, t = Assignment._meta.db_table, ComparisonTask._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.task_id, a.display_order, t.round_id, r.rubric_id, ru.created_at, "
            f"r.announce_judgments, tc.completion_id FROM {a} a JOIN {t} t ON t.id = a.task_id "
            f"JOIN {Round._meta.db_table} r ON r.id = t.round_id "
            f"JOIN {Rubric._meta.db_table} ru ON ru.id = r.rubric_id "
            f"LEFT JOIN {TaskCompletion._meta.db_table} tc ON tc.task_id = a.task_id "
            "WHERE a.id = %s AND a.annotator_id = %s ORDER BY tc.position",
            [sql_uuid(assignment_id), annotator.pk],
        )
        rows = cursor.fetchall()
    if not rows:
        raise DomainError("No such assignment.", code="not_found", status=404)
    task_id, order, round_id, rubric_id, rubric_created, announce, _ = rows[0]
    completion_ids = [row[-1] for row in rows if row[-1] is not None]
    rubric = rubric_cached(rubric_id, rubric_created)
    # The round's id when its judgments are to be announced, else None.
    announced = round_id if announce else None
    return assignment_id, task_id, from_sql_json(order), announced, rubric, completion_ids


def judgment_submit(
    *, assignment_id: object, annotator: AbstractBaseUser, body: object
) -> Judgment:
    """Store the annotator's judgment for an assignment. Idempotent.

    The same body again returns the stored judgment; a different body after a submit is a 409
    naming the judgment that exists; another annotator's assignment is a 404.

    The common case, a live lease submitted once, takes the fast path: the slot moved and the
    judgment stored in hand-written statements (the task's row first, the lock order every slot
    change uses). Everything else (a resubmit, a lapsed lease, a skipped one) finds the
    assignment not live-leased there, undoes it, and takes the general path.
    """
    now = timezone.now()
    assignment_id, task_id, order, announced, rubric, completion_ids = _submit_context(
        assignment_id=assignment_id, annotator=annotator
    )
    clean, errors = judgment_validate(body=body, completion_ids=completion_ids, rubric=rubric)
    errors_raise(errors)
    digest = body_sha256(clean)
    judgment = Judgment(
        id=uuid.uuid4(), assignment_id=assignment_id, task_id=task_id, annotator=annotator,
        rubric=rubric, ranking=clean["ranking"], scores=clean["scores"],
        strength=clean["strength"], flags=clean["flags"], rationale=clean["rationale"],
        time_spent_ms=clean["time_spent_ms"], none_acceptable=clean["none_acceptable"],
        body_sha256=digest,
        # Kept with the decision: position bias is measured from it (``position_bias``).
        display_order=order, created_at=now,
    )  # fmt: skip
    if _judgment_store_fast(judgment, now=now):
        if announced is not None:
            # Outside a transaction (the function's call committed) this runs at once.
            transaction.on_commit(
                lambda: judgment_recorded.send(sender=Judgment, round_id=announced)
            )
        return judgment
    with transaction.atomic():
        task, assignment = task_lock_with_assignment(task_id=task_id, assignment_id=assignment_id)
        # The current judgment: after a correction (``corrections``) that is the correction.
        existing = Judgment.objects.filter(assignment_id=assignment.pk).first()
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


_JUDGMENT_COLUMNS = (
    "id", "assignment_id", "task_id", "annotator_id", "rubric_id", "ranking", "scores",
    "strength", "flags", "rationale", "time_spent_ms", "display_order", "body_sha256",
    "created_at", "none_acceptable",
)  # fmt: skip


def _judgment_store_fast(judgment: Judgment, *, now: datetime) -> bool:
    """Move the slot from leased to submitted and store ``judgment``; False, with nothing
    written, when the assignment is not live-leased (the general path then decides).

    On PostgreSQL that is one call of ``annotation_submit`` (migration
    ``annotation/0018_submit_function``), in autocommit: one round trip where a transaction of
    the statements below takes four (BEGIN, the task, the assignment with the judgment,
    COMMIT). ``HOT_PATH_IN_DATABASE=0`` and SQLite run the statements."""
    values = [
        sql_uuid(judgment.pk), sql_uuid(judgment.assignment_id), judgment.task_id,
        judgment.annotator_id, judgment.rubric_id, sql_json(judgment.ranking),
        sql_json(judgment.scores), judgment.strength, sql_json(judgment.flags),
        judgment.rationale, judgment.time_spent_ms, sql_json(judgment.display_order),
        judgment.body_sha256, sql_datetime(now), judgment.none_acceptable,
    ]  # fmt: skip
    if connection.vendor == "postgresql" and settings.HOT_PATH_IN_DATABASE:
        with connection.cursor() as cursor:
            # The function's parameters: now (it is created_at too), then the judgment's
            # columns but created_at.
            params = [sql_datetime(now), *values[:13], values[14]]
            cursor.execute(_SUBMIT_CALL, params)
            return bool(cursor.fetchone()[0])
    try:
        with transaction.atomic():
            _judgment_statements(judgment, values=values, now=now)
        return True
    except _SlowPath:
        return False


_SUBMIT_CALL = (
    "SELECT annotation_submit(%s::timestamptz, %s::uuid, %s::uuid, %s::bigint, %s::integer, "
    "%s::bigint, %s::jsonb, %s::jsonb, %s::text, %s::jsonb, %s::text, %s::integer, %s::jsonb, "
    "%s::text, %s::boolean)"
)


def _judgment_statements(judgment: Judgment, *, values: list[Any], now: datetime) -> None:
    """The fast path as statements in the caller's transaction, or raise ``_SlowPath`` (which
    undoes them) when the assignment is not live-leased.

    The task's row is updated first: that takes its lock before the assignment's, as every
    path does. A live lease always holds a slot (``leased_count`` > 0); the assignment's own
    update then moves it from leased to submitted only if it still is, a condition read after
    the lock, so a concurrent resubmit of the same body finds it submitted and goes the general
    way (it returns this judgment)."""
    t, a = ComparisonTask._meta.db_table, Assignment._meta.db_table
    j = Judgment._meta.db_table
    submitted = (
        f"UPDATE {a} SET status = 'submitted', finished_at = %s WHERE id = %s "
        "AND status = 'leased' AND lease_expires_at > %s"
    )
    submitted_params = [sql_datetime(now), sql_uuid(judgment.assignment_id), sql_datetime(now)]
    insert = (
        f"INSERT INTO {j} ({', '.join(_JUDGMENT_COLUMNS)}) "
        f"SELECT {', '.join(['%s'] * len(_JUDGMENT_COLUMNS))}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {t} SET leased_count = leased_count - 1, "
            "submitted_count = submitted_count + 1, leases_expire_at = CASE WHEN "
            "leased_count = 1 THEN NULL ELSE leases_expire_at END "
            "WHERE id = %s AND leased_count > 0",
            [judgment.task_id],
        )
        if cursor.rowcount != 1:
            raise _SlowPath
        if connection.vendor == "postgresql":
            # One round trip: the judgment is inserted only if the assignment moved.
            cursor.execute(
                f"WITH moved AS ({submitted} RETURNING id) {insert} "
                "WHERE EXISTS (SELECT 1 FROM moved) RETURNING id",
                [*submitted_params, *values],
            )
            moved = cursor.fetchone() is not None
        else:
            cursor.execute(submitted, submitted_params)
            moved = cursor.rowcount == 1
            if moved:
                cursor.execute(insert, values)
        if not moved:
            raise _SlowPath


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
        none_acceptable=clean["none_acceptable"],
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
    if task.round.announce_judgments:
        round_id = task.round_id
        transaction.on_commit(lambda: judgment_recorded.send(sender=Judgment, round_id=round_id))
    return judgment
