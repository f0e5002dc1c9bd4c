"""Task distribution: leasing comparison tasks to annotators (DESIGN §4).

How ``task_next_for_annotator`` decides, step by step (on PostgreSQL the lease route runs the
same steps server-side, in one statement: ``annotation.lease``)::

    annotator asks for work
      │
      ▼
    lock the annotator (an advisory transaction lock on ``annotator_lock_key``, the lease rate
    limit's own key, so the lease route, which took it for the limit, does not take it again):
    two tabs, or a script's burst, asking at the same moment queue here, in whatever process
    they run, and each after the first sees the lease the first took
      │
      ├─ holds an unexpired lease on a task of an open round? ── yes ─► return that same assignment
      │ no
      ▼
    candidates = tasks of open rounds that are not complete, that this annotator has not
                 submitted or skipped, and that have a free slot (submitted + leased < overlap)
                 or may hold an expired lease (leases_expire_at ≤ now);
                 ordered by their round's priority (a gate's side-by-side round first), then
                 nearest completion first (most judgments), then oldest
      │
      ▼
    lock the first candidate nobody else has locked (SELECT … FOR UPDATE SKIP LOCKED on
    PostgreSQL: concurrent annotators fan out over different tasks instead of queueing)
      │
      ├─ its leases_expire_at has passed? ─► mark its expired leases ``expired`` and recount
      │                                       (their slots go back to the pool)
      ▼
    free slot now? ── no ─► try the next candidate (bounded)
      │ yes
      ▼
    a gold task of that round due for this annotator (``gold_due``)? ─► lease
      │                                          that one instead (gold tasks are never candidates
      ▼                                          above, and are served only among real work)
    lease it: reuse this annotator's old (expired) assignment row if there is one, else insert;
    store the order this annotator is shown the completions in (``assignment_display_order``);
    leased_count += 1; commit. The row lock plus the check constraint
    ``submitted_count + leased_count ≤ overlap`` make over-assignment impossible.

Every path that changes a task's slots (lease, submit, skip, reclaim) holds that task's row lock,
so the counters on the task row are exact for whoever holds it. On SQLite (the embedded default)
``FOR UPDATE`` is a no-op and IMMEDIATE transactions serialise writers instead.

One live lease per annotator (so one per round, whatever the timing) rests on the first lock:
only this function turns an assignment into a lease (a late submit re-takes its slot and is
stored as submitted in the same save), and it checks for a held lease under that lock. The lock
order is always the annotator, then tasks; submit, skip and the sweep take task locks only, so
no two paths wait on each other in opposite orders. A lock rather than a partial unique index on
(annotator, round) where leased: the assignment row has no round of its own, and a lease that
lapsed stays ``leased`` until a claimer or the sweep reclaims it, which such an index would
count as live.

Each assignment shows the task's completions in an order of its own, a shuffle keyed by the
round's seed, the task and the annotator (``assignment_display_order``), stored on the
assignment when it is leased and copied onto the judgment. The task's own positions are already
a shuffle, but one every annotator shared: a reader's bias toward the first answer then fell on
the same completion in every judgment of a task, and pushed its consensus. With an order per
annotator the bias spreads over the completions, and the research dashboard measures it
(``annotation.position_bias``). A side-by-side round (a promotion gate, ``annotation.side_by_side``)
is shown as stored instead: its tasks alternate which policy's answer comes first, so the order is
balanced exactly over the round rather than at random.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, Exists, F, Min, OuterRef, Q
from django.utils import timezone

from feedback.platform.errors import DomainError
from feedback.platform.throttle import keys_lock

from .models import Assignment, ComparisonTask, Round, Rubric
from .raw_sql import (
    TaskRead,
    sql_datetime,
    sql_json,
    sql_uuid,
    task_read,
)

MAX_CANDIDATES_TRIED = 20


def gold_due(*, annotator_id: int, judged: int, gold_judged: int, rate: float) -> bool:
    """Whether an annotator's next task should be a gold one.

    The draw is pseudo-random, the first 48 bits of a SHA-256 of the annotator and how many
    tasks they have judged, so gold tasks come at no pattern an annotator could learn, yet the
    same state always gives the same answer (a retried lease request is served the same kind of
    task), and PostgreSQL's lease computes the same (``annotation_gold_due``, migration
    ``annotation/0017``). Guards keep the share within one task of ``rate`` whatever the draws:
    never more than ``rate`` of the tasks so far plus one, and due at once when it has fallen
    more than one behind. Without the second, an unlucky run of draws could serve an annotator
    no gold at all over a whole round's worth of tasks (at 0.25, one annotator in a hundred over
    sixteen), and their trust would rest on nothing.
    """
    if rate <= 0:
        return False
    if gold_judged + 1 > rate * (judged + 1) + 1:
        return False
    if gold_judged + 1 < rate * (judged + 1):
        return True
    digest = hashlib.sha256(f"gold:{annotator_id}:{judged}".encode()).hexdigest()
    return int(digest[:12], 16) / 2**48 < rate


def assignment_display_order(
    *, seed: int, task_id: int, annotator_id: int, completion_ids: Sequence[int]
) -> list[int]:
    """The order one annotator is shown a task's completions in: ``completion_ids`` (the task's
    positions) sorted by the SHA-256 of ``"display-order:<round seed>:<task id>:<annotator
    id>:<completion id>"``.

    A hash rather than ``random.Random`` (which it was): it is the same in every process and
    Python version, unlike ``hash()``, and PostgreSQL computes it too (``sha256``), so the lease
    can run as one statement there (``annotation.lease``). It rests on the task and the
    annotator rather than on the assignment's random id, so it can be recomputed from the data
    alone, and an annotator re-leased the same task is shown it the same way.
    """

    def key(completion_id: int) -> tuple[bytes, int]:
        text = f"display-order:{seed}:{task_id}:{annotator_id}:{completion_id}"
        return hashlib.sha256(text.encode()).digest(), completion_id

    return sorted(completion_ids, key=key)


@dataclass(frozen=True)
class LeasedTask:
    """A leased assignment with everything the annotator needs to judge it, read in the lease's
    own statements (no model instances: the lease is the API's hottest path); ``completions``
    are (completion id, text) in the order this annotator is shown them (``display_order``)."""

    assignment_id: uuid.UUID
    lease_expires_at: datetime
    task_id: int
    round_number: int
    rubric: Rubric
    messages: list[dict[str, Any]]
    safety: bool
    completions: list[tuple[int, str]]


def distribution_statistics_refresh() -> None:
    """After a round's tasks are published, once the transaction commits: ANALYZE the tables the
    lease query reads (PostgreSQL only).

    A round adds its tasks in one bulk insert; until autovacuum next samples the tables (a minute
    or more), the planner believes they are nearly empty and picks nested loops over every
    assignment of the annotator, about 50 times slower than walking the open-task index (seen in
    ``benchmarks/annotation_api.py``: 22 ms against 0.4 ms a lease). Sampling costs well under a
    second even at a million tasks."""
    from django.db import connection

    def analyze() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "ANALYZE annotation_comparisontask, annotation_assignment, "
                "annotation_taskcompletion"
            )

    if connection.vendor == "postgresql":
        transaction.on_commit(analyze)


def lease_expiry(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.LEASE_SECONDS)


def leased_task(
    *,
    assignment_id: uuid.UUID,
    expires: datetime,
    order: list[int],
    task_id: int,
    round_number: int,
    rubric: Rubric,
    messages: list[dict[str, Any]],
    safety: bool,
    slots: list[tuple[int, str]],
) -> LeasedTask:
    """What the annotator is shown: the slots (completion id, text, in position order) in
    ``order``, or in position order where it does not fit (a lease taken before orders were
    stored shows what it showed then)."""
    texts = dict(slots)
    shown = [(cid, texts[cid]) for cid in order] if sorted(order) == sorted(texts) else slots
    return LeasedTask(
        assignment_id=assignment_id, lease_expires_at=expires, task_id=task_id,
        round_number=round_number, rubric=rubric, messages=messages, safety=safety,
        completions=shown,
    )  # fmt: skip


def _leased(
    task: TaskRead, assignment_id: uuid.UUID, expires: datetime, order: list[int]
) -> LeasedTask:
    return leased_task(
        assignment_id=assignment_id, expires=expires, order=order, task_id=task.id,
        round_number=task.round_number, rubric=task.rubric, messages=task.messages,
        safety=task.safety, slots=task.slots,
    )  # fmt: skip


def task_reclaim_expired_leases(*, task: Any, now: datetime) -> int:
    """Expire the task's lapsed leases and recount its leases. The caller holds the task's lock.

    Returns how many leases were reclaimed. Updates ``task`` (a ``ComparisonTask``, or the
    lease's own record of one) in memory only; the caller saves it.
    """
    reclaimed = Assignment.objects.filter(
        task_id=task.id, status=Assignment.Status.LEASED, lease_expires_at__lte=now
    ).update(status=Assignment.Status.EXPIRED, finished_at=now)
    live = Assignment.objects.filter(task_id=task.id, status=Assignment.Status.LEASED).aggregate(
        n=Count("pk"), first=Min("lease_expires_at")
    )
    task.leased_count = live["n"]
    task.leases_expire_at = live["first"]
    return reclaimed


def _counts_save(task: Any) -> None:
    ComparisonTask.objects.filter(pk=task.id).update(
        leased_count=task.leased_count, leases_expire_at=task.leases_expire_at
    )


def annotator_lock_key(annotator_id: object) -> str:
    """The lock an annotator's lease requests queue on: the key of the lease rate limit
    (``THROTTLE_RATES["lease"]``), whose check the lease route makes first under the same
    advisory lock (``feedback.platform.throttle.keys_lock``), in the same transaction."""
    return f"lease:user:{annotator_id}"


def _annotator_lock_holds_lease(annotator: AbstractBaseUser, now: datetime, locked: bool) -> bool:
    """Lock the annotator until the transaction ends (their lease requests queue), unless the
    caller holds that lock already (``locked``), then say whether they hold an unexpired lease:
    an index probe of ``assignment_active_lease`` (most requests hold nothing).

    An advisory lock rather than the user's row (``FOR UPDATE``), which it was: the lease route
    takes the rate limit's advisory lock on the same key first, so one lock serves both and a
    lease is a round trip shorter. On PostgreSQL the lock and the probe are two statements: a
    statement's snapshot is taken before it waits on the lock, so a probe in the locking
    statement would not see the lease that the request it waited for committed, and two tabs
    would both get one. SQLite's transaction holds the database's write lock from its start,
    so there one statement sees everything."""
    probe = (
        f"SELECT EXISTS (SELECT 1 FROM {Assignment._meta.db_table} a "
        f"WHERE a.annotator_id = %s AND a.status = 'leased' AND a.lease_expires_at > %s)"
    )
    if not locked:
        keys_lock([annotator_lock_key(annotator.pk)])
    with connection.cursor() as cursor:
        cursor.execute(probe, [annotator.pk, sql_datetime(now)])
        row = cursor.fetchone()
    return bool(row and row[0])


def _held_lease(annotator: AbstractBaseUser, now: datetime) -> LeasedTask | None:
    held = (
        Assignment.objects.filter(
            annotator=annotator,
            status=Assignment.Status.LEASED,
            lease_expires_at__gt=now,
            task__round__status=Round.Status.OPEN,
        )
        .order_by("lease_expires_at")
        .values_list("pk", "task_id", "lease_expires_at", "display_order")
        .first()
    )
    if held is None:
        return None
    assignment_id, task_id, expires, order = held
    task = task_read([annotator.pk, task_id], pick=False)
    assert task is not None  # the assignment's task, read in the same transaction
    return _leased(task, assignment_id, expires, order)


def task_next_for_annotator(
    *, annotator: AbstractBaseUser, now: datetime | None = None, locked: bool = False
) -> LeasedTask | None:
    """Lease the next task to ``annotator``, or return the one they hold. None when none is left.

    Inside a caller's transaction (the lease route's, which holds the rate limit's log) it
    takes no savepoint: it is all or nothing with the caller's work, and pays no round trips.
    ``locked``: the caller's transaction holds the annotator's lock (``annotator_lock_key``)."""
    now = now or timezone.now()
    with transaction.atomic(savepoint=False):
        if _annotator_lock_holds_lease(annotator, now, locked):
            held = _held_lease(annotator, now)
            if held is not None:
                return held
        tried: list[int] = []
        for _ in range(MAX_CANDIDATES_TRIED):
            params = [annotator.pk, sql_datetime(now), annotator.pk, *tried]
            task = task_read(params, pick=True, tried=len(tried))
            if task is None:
                return None
            if task.leases_expire_at is not None and task.leases_expire_at <= now:
                task_reclaim_expired_leases(task=task, now=now)
            if task.submitted_count + task.leased_count < task.overlap:
                gold = _gold_instead(task=task, annotator=annotator)
                leased = _lease(task=gold or task, annotator=annotator, now=now)
                if leased is not None:
                    return leased
            # Not leased (a stale lower bound with no lapsed lease behind it, or a row of
            # this annotator's no longer lapsed): store the exact counts and move on.
            _counts_save(task)
            tried.append(task.id)
    return None


def _gold_instead(*, task: TaskRead, annotator: AbstractBaseUser) -> TaskRead | None:
    """A gold task of ``task``'s round for this annotator, locked, if one is due
    (``annotation.gold``).

    Gold is mixed only into real work: when no ordinary task is left, none is served, so a
    queue never ends in a run of tasks that would give gold away. Rounds without gold tasks
    (``gold_count`` 0) cost no query.
    """
    if task.gold_count == 0 or task.gold_rate <= 0:
        return None
    done = Assignment.objects.filter(
        annotator=annotator, task__round_id=task.round_id, status=Assignment.Status.SUBMITTED
    ).aggregate(all=Count("pk"), gold=Count("pk", filter=Q(task__gold_ranking__isnull=False)))
    if not gold_due(
        annotator_id=annotator.pk, judged=done["all"], gold_judged=done["gold"],
        rate=task.gold_rate,
    ):  # fmt: skip
        return None
    mine = Assignment.objects.filter(task=OuterRef("pk"), annotator=annotator)
    gold_id = (
        ComparisonTask.objects.filter(
            round_id=task.round_id,
            round__status=Round.Status.OPEN,
            gold_ranking__isnull=False,
            submitted_count__lt=F("overlap") - F("leased_count"),
        )
        .exclude(Exists(mine.exclude(status=Assignment.Status.EXPIRED)))
        .order_by("id")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("pk", flat=True)
        .first()
    )
    return None if gold_id is None else task_read([annotator.pk, gold_id], pick=False)


def _lease(*, task: TaskRead, annotator: AbstractBaseUser, now: datetime) -> LeasedTask | None:
    """Lease ``task`` (locked, with a free slot) to ``annotator``; None if the row of theirs it
    would reuse is no longer a lapsed one (a late submit of it committed meanwhile)."""
    expires = lease_expiry(now)
    order = [completion_id for completion_id, _ in task.slots]
    if task.shuffled:  # a side-by-side round balances its order over its tasks instead
        order = assignment_display_order(
            seed=task.seed, task_id=task.id, annotator_id=annotator.pk, completion_ids=order
        )
    first_expiry = expires
    if task.leases_expire_at is not None and task.leases_expire_at < expires:
        first_expiry = task.leases_expire_at
    count = (
        f"UPDATE {ComparisonTask._meta.db_table} SET leased_count = %s, leases_expire_at = %s "
        "WHERE id = %s"
    )
    count_params = [task.leased_count + 1, sql_datetime(first_expiry), task.id]
    lease = [sql_datetime(now), sql_datetime(expires), sql_json(order)]
    a = Assignment._meta.db_table
    with connection.cursor() as cursor:
        if task.mine is not None:
            # This annotator's earlier lease on this task lapsed: the same row (and id) comes back.
            cursor.execute(
                f"UPDATE {a} SET status = 'leased', leased_at = %s, lease_expires_at = %s, "
                "display_order = %s, finished_at = NULL WHERE id = %s AND status = 'expired'",
                [*lease, sql_uuid(task.mine)],
            )
            if cursor.rowcount != 1:
                return None
            cursor.execute(count, count_params)
            assignment_id = task.mine
        else:
            assignment_id = uuid.uuid4()
            insert = (
                f"INSERT INTO {a} (id, task_id, annotator_id, status, leased_at, "
                "lease_expires_at, display_order, finished_at, skip_reason) "
                "VALUES (%s, %s, %s, 'leased', %s, %s, %s, NULL, '')"
            )
            params = [sql_uuid(assignment_id), task.id, annotator.pk, *lease]
            if connection.vendor == "postgresql":
                # One round trip: the assignment and the slot it takes.
                cursor.execute(f"WITH a AS ({insert}) {count}", [*params, *count_params])
            else:
                cursor.execute(insert, params)
                cursor.execute(count, count_params)
    return _leased(task, assignment_id, expires, order)


def assignment_get_own(*, assignment_id: object, annotator: AbstractBaseUser) -> Assignment:
    """The caller's own assignment. Another annotator's is indistinguishable from none (404)."""
    assignment = (
        Assignment.objects.select_related("task__round__rubric")
        .filter(pk=assignment_id, annotator=annotator)
        .first()
    )
    if assignment is None:
        raise DomainError("No such assignment.", code="not_found", status=404)
    return assignment


def task_lock_with_assignment(
    *, task_id: int, assignment_id: object
) -> tuple[ComparisonTask, Assignment]:
    """Lock the task, then re-read the assignment: the one lock order every slot change uses."""
    task = (
        ComparisonTask.objects.select_for_update(of=("self",))
        .select_related("round__rubric")
        .get(pk=task_id)
    )
    assignment = Assignment.objects.get(pk=assignment_id)
    return task, assignment


def assignment_hold_slot(*, task: ComparisonTask, assignment: Assignment, now: datetime) -> None:
    """Make sure ``assignment`` holds one of ``task``'s slots, or refuse. Caller holds the lock.

    An unexpired lease holds its slot. A lapsed one is accepted only while a slot is free: a late
    submit is never dropped silently, it is either stored or refused with a 409 saying why.
    """
    if assignment.status == Assignment.Status.LEASED and assignment.lease_expires_at > now:
        return
    if task.round.status != Round.Status.OPEN:
        raise DomainError(
            "The round was closed after your lease expired.", code="round_closed", status=409
        )
    task_reclaim_expired_leases(task=task, now=now)
    if task.submitted_count + task.leased_count >= task.overlap:
        task.save(update_fields=["leased_count", "leases_expire_at"])
        raise DomainError(
            "Your lease expired and the task's slots were taken by other annotators.",
            code="lease_expired",
            status=409,
        )
    # Re-take the free slot for this assignment.
    task.leased_count += 1
    assignment.status = Assignment.Status.LEASED


def assignment_skip(
    *, assignment_id: object, annotator: AbstractBaseUser, reason: str, now: datetime | None = None
) -> Assignment:
    """Give a task back with a reason; it is not offered to this annotator again. Idempotent."""
    now = now or timezone.now()
    reason = reason.strip()
    if not reason:
        raise DomainError(
            "A skip needs a reason.", fields={"reason": ["This field may not be blank."]}
        )
    own = assignment_get_own(assignment_id=assignment_id, annotator=annotator)
    with transaction.atomic():
        task, assignment = task_lock_with_assignment(task_id=own.task_id, assignment_id=own.pk)
        if assignment.status == Assignment.Status.SKIPPED:
            return assignment
        if assignment.status == Assignment.Status.SUBMITTED:
            raise DomainError(
                "This assignment was already submitted.", code="already_submitted", status=409
            )
        if assignment.status == Assignment.Status.LEASED:
            task.leased_count -= 1
            if task.leased_count == 0:
                task.leases_expire_at = None
            task.save(update_fields=["leased_count", "leases_expire_at"])
        assignment.status = Assignment.Status.SKIPPED
        assignment.skip_reason = reason[:500]
        assignment.finished_at = now
        assignment.save(update_fields=["status", "skip_reason", "finished_at"])
    return assignment


def leases_expire(*, now: datetime | None = None) -> int:
    """Reclaim every lapsed lease (the periodic sweep). Claimers also do this lazily per task."""
    now = now or timezone.now()
    reclaimed = 0
    task_ids = list(
        ComparisonTask.objects.filter(leases_expire_at__lte=now).values_list("pk", flat=True)[:5000]
    )
    for task_id in task_ids:
        with transaction.atomic():
            task = (
                ComparisonTask.objects.select_for_update(skip_locked=True)
                .filter(pk=task_id, leases_expire_at__lte=now)
                .first()
            )
            if task is None:
                continue
            reclaimed += task_reclaim_expired_leases(task=task, now=now)
            task.save(update_fields=["leased_count", "leases_expire_at"])
    return reclaimed
