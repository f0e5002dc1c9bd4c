"""Corrections: an annotator revises a judgment they submitted, while its round is open.

A judgment is never rewritten (DESIGN §3). A correction is a new judgment of the same assignment,
validated exactly as a submit is, against the same rubric version and completions as the
judgment it corrects. That one keeps every field as it was and is marked superseded
(``superseded_by``, ``superseded_at``), which takes it out of ``Judgment.objects`` and so out of
exports, snapshots, quality and consensus. The task's and the assignment's counters do not
move: it is still one judgment for that assignment. Each correction writes an audit event in the
same transaction: who replaced which judgment with which.

Idempotent, as a submit is: the same correction sent again (to the judgment it superseded)
returns that correction, and a body equal to the judgment's own changes nothing. A different
correction of a superseded judgment is a 409 naming the current one; a judgment of a closed
round is a 409 ``round_closed``; another annotator's judgment is a 404, as if it did not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from feedback.platform.audit import audit_action_record
from feedback.platform.errors import DomainError

from .distribution import task_lock_with_assignment
from .judgments import body_sha256, judgment_validate
from .models import Judgment, Round
from .selectors import task_completion_ids
from .strict_json import errors_raise

REVISE_ACTION = "api:judgment-revise"  # the route, as the audit log names actions


@dataclass(frozen=True)
class Revision:
    """The judgment that stands after a revise, and the one it superseded (None when the body
    was the judgment's own and nothing changed, and it corrected nothing before)."""

    judgment: Judgment
    supersedes: uuid.UUID | None


def _own_judgment(*, judgment_id: object, annotator: AbstractBaseUser) -> Judgment:
    """One of the caller's judgments, current or not; another's is indistinguishable from none."""
    judgment = (
        Judgment.all_versions.select_related("rubric")
        .filter(pk=judgment_id, annotator=annotator)
        .first()
    )
    if judgment is None:
        raise DomainError("No such judgment.", code="not_found", status=404)
    return judgment


def judgment_revise(*, judgment_id: object, annotator: AbstractBaseUser, body: object) -> Revision:
    """Replace one's own judgment with a corrected one, while its round is open. Idempotent
    (see the module docstring); the task's row, then the assignment's, is locked as every slot
    change locks them, so two corrections of one assignment (or a correction and the round's
    close) take turns."""
    original = _own_judgment(judgment_id=judgment_id, annotator=annotator)
    clean, errors = judgment_validate(
        body=body,
        completion_ids=task_completion_ids(task_id=original.task_id),
        rubric=original.rubric,
    )
    errors_raise(errors)
    digest = body_sha256(clean)
    with transaction.atomic():
        task, _ = task_lock_with_assignment(
            task_id=original.task_id, assignment_id=original.assignment_id
        )
        judgment = Judgment.all_versions.select_related("superseded_by").get(pk=original.pk)
        if judgment.superseded_by is not None:
            return _replayed(judgment, judgment.superseded_by, digest=digest)
        if judgment.body_sha256 == digest:
            return Revision(judgment, _supersedes(judgment))
        if task.round.status != Round.Status.OPEN:
            raise DomainError(
                f"Round {task.round.number} is closed: its judgments can no longer be revised.",
                code="round_closed",
                status=409,
                extra={"round": task.round.number},
            )
        revised = _revision_store(judgment, clean=clean, digest=digest, now=timezone.now())
        audit_action_record(
            actor=annotator, action=REVISE_ACTION, method="POST",
            path=reverse(REVISE_ACTION, args=[judgment.pk]),
            target={"judgment_id": str(judgment.pk), "superseded_by": str(revised.pk),
                    "assignment_id": str(judgment.assignment_id),
                    "round": str(task.round.number)},
        )  # fmt: skip
    return Revision(revised, judgment.pk)


def _replayed(judgment: Judgment, successor: Judgment, *, digest: str) -> Revision:
    """A revise of a judgment already superseded (by ``successor``): the same correction again
    gets it back; any other body is a 409 naming the assignment's current judgment, the one to
    revise now."""
    if successor.superseded_by_id is None and successor.body_sha256 == digest:
        return Revision(successor, judgment.pk)
    current = Judgment.objects.get(assignment_id=judgment.assignment_id)
    raise DomainError(
        f"Judgment {judgment.pk} was superseded by judgment {successor.pk}; the current judgment "
        f"of this assignment is {current.pk}: revise that one.",
        code="superseded",
        status=409,
        extra={"judgment": str(current.pk)},
    )


def _supersedes(judgment: Judgment) -> uuid.UUID | None:
    """The judgment that ``judgment`` corrected, if it is a correction."""
    return Judgment.all_versions.filter(superseded_by=judgment).values_list("pk", flat=True).first()


def _revision_store(
    original: Judgment, *, clean: dict[str, Any], digest: str, now: datetime
) -> Judgment:
    """Mark ``original`` superseded and store its correction (the caller holds the locks).

    The old row is marked first: the partial unique constraint allows one current judgment per
    assignment at every moment (were it still current, the insert would fail on it), and its
    foreign key to the new row is checked at commit (Django makes foreign keys deferred on
    PostgreSQL and SQLite). Only the two marks are written to it.
    """
    revised_id = uuid.uuid4()
    Judgment.objects.filter(pk=original.pk).update(superseded_by_id=revised_id, superseded_at=now)
    return Judgment.objects.create(
        id=revised_id, assignment_id=original.assignment_id, task_id=original.task_id,
        annotator_id=original.annotator_id, rubric_id=original.rubric_id,
        ranking=clean["ranking"], scores=clean["scores"], strength=clean["strength"],
        flags=clean["flags"], rationale=clean["rationale"],
        time_spent_ms=clean["time_spent_ms"], none_acceptable=clean["none_acceptable"],
        body_sha256=digest,
        # The order the annotator was shown is the assignment's: the same for the correction.
        display_order=original.display_order,
    )  # fmt: skip
