"""Progress through rounds: an annotator's own (the workspace's "task 6 of 24", and every
round's on the progress page), how far each round's overlap has filled (what agreement can rest
on so far), and a round's leaderboard.

The leaderboard is off until an admin turns it on for a round (``round_set_leaderboard``), and
then pseudonymous unless they also choose names: a ranking of peers changes how people
annotate, so it is a choice made per round, not a default. It ranks annotators by judgments
(ties share a rank) and shows beside each their agreement with the leave-one-out consensus of
the others (``quality.annotator_quality``), a Wilson interval with it: volume alone would
reward haste. Trust is not shown: it is the weight an export gives a person, not a score to
chase.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Sum

from feedback.platform.errors import DomainError

from .models import Assignment, ComparisonTask, Round
from .pseudonyms import leaderboard_pseudonym, usernames_by_id
from .quality import Estimate, annotator_quality

DONE = (Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED)


@dataclass(frozen=True)
class RoundProgress:
    number: int
    tasks: int  # tasks in the round, gold tasks included
    judged: int  # this annotator's judgments in it
    skipped: int  # and skips


def annotator_round_progress(
    *, annotator: AbstractBaseUser, round_number: int
) -> RoundProgress | None:
    """How far this annotator is through round ``round_number``; None when there is no such
    round."""
    round_ = Round.objects.filter(number=round_number).only("pk").first()
    if round_ is None:
        return None
    mine = Assignment.objects.filter(annotator=annotator, task__round=round_).aggregate(
        judged=Count("pk", filter=Q(status=Assignment.Status.SUBMITTED)),
        skipped=Count("pk", filter=Q(status=Assignment.Status.SKIPPED)),
    )
    return RoundProgress(
        number=round_number,
        tasks=ComparisonTask.objects.filter(round=round_).count(),
        judged=mine["judged"],
        skipped=mine["skipped"],
    )


@dataclass(frozen=True)
class RoundOverlap:
    """What agreement in a round can rest on so far: the judgments it asks for per task, and
    how many of its ordinary (non-gold) tasks have two or more (gold tasks are scored against
    their reference, not against each other)."""

    round_id: int
    number: int
    status: str  # Round.Status: a closed round gets no more judgments
    overlap: int  # judgments wanted per task, set when the round is opened
    tasks: int  # ordinary tasks
    judgments: int  # judgments on them so far
    judged_twice: int  # ordinary tasks with two or more judgments: what agreement rests on


def round_overlap(*, rounds: list[int] | None = None) -> list[RoundOverlap]:
    """``RoundOverlap`` of every round in ``rounds`` (all when empty or None), by number, in
    one query over the tasks' judgment counters (one judgment per annotator per task, so
    ``submitted_count`` is also the number of annotators)."""
    ordinary = Q(tasks__gold_ranking__isnull=True)
    chosen = Round.objects.filter(number__in=rounds) if rounds else Round.objects.all()
    rows = (
        chosen.order_by("number")
        .annotate(
            ordinary_tasks=Count("tasks", filter=ordinary),
            ordinary_judgments=Sum("tasks__submitted_count", default=0, filter=ordinary),
            judged_twice=Count("tasks", filter=ordinary & Q(tasks__submitted_count__gte=2)),
        )
        .values_list(
            "pk",
            "number",
            "status",
            "overlap",
            "ordinary_tasks",
            "ordinary_judgments",
            "judged_twice",
        )
    )
    return [RoundOverlap(*row) for row in rows]


# --- Every round, for one annotator -------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorRoundProgress:
    """One annotator's progress through one round."""

    round_id: int
    number: int
    status: str  # Round.Status
    tasks: int  # tasks in the round
    judged: int  # this annotator's judgments in it
    skipped: int  # and skips
    available: int  # tasks they may still be given: open round, short of overlap, not done
    leaderboard: bool  # whether an admin turned the round's leaderboard on

    @property
    def percent(self) -> int:
        """How far through what the round holds for them: done over done and available."""
        done = self.judged + self.skipped
        return 100 if done + self.available == 0 else round(100 * done / (done + self.available))


def annotator_progress_by_round(*, annotator: AbstractBaseUser) -> list[AnnotatorRoundProgress]:
    """The annotator's progress through every open round and every round they worked in,
    newest first, in three queries whatever the number of rounds."""
    mine = Assignment.objects.filter(annotator=annotator, status__in=DONE)
    rounds = list(
        Round.objects.filter(
            Q(status=Round.Status.OPEN) | Exists(mine.filter(task__round=OuterRef("pk")))
        )
        .annotate(task_count=Count("tasks"))
        .order_by("-number")
        .values_list("pk", "number", "status", "task_count", "leaderboard_enabled")
    )
    counts = {
        row["task__round_id"]: row
        for row in mine.filter(task__round_id__in=[r[0] for r in rounds])
        .values("task__round_id")
        .annotate(
            judged=Count("pk", filter=Q(status=Assignment.Status.SUBMITTED)),
            skipped=Count("pk", filter=Q(status=Assignment.Status.SKIPPED)),
        )
    }
    # Gold tasks count too: their overlap is every annotator (annotation.gold).
    available = dict(
        ComparisonTask.objects.filter(
            round_id__in=[r[0] for r in rounds if r[2] == Round.Status.OPEN],
            submitted_count__lt=F("overlap"),
        )
        .exclude(Exists(mine.filter(task=OuterRef("pk"))))
        .values("round_id")
        .annotate(n=Count("pk"))
        .values_list("round_id", "n")
    )
    return [
        AnnotatorRoundProgress(
            round_id=pk,
            number=number,
            status=status,
            tasks=tasks,
            judged=counts.get(pk, {}).get("judged", 0),
            skipped=counts.get(pk, {}).get("skipped", 0),
            available=available.get(pk, 0),
            leaderboard=enabled,
        )
        for pk, number, status, tasks, enabled in rounds
    ]


# --- A round's leaderboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int  # by judgments; annotators with as many share a rank
    annotator_id: int
    name: str  # the round's pseudonym, or the username where the admin chose names
    judged: int
    skipped: int
    agreement: Estimate  # with the leave-one-out consensus of the others, Wilson interval


def round_leaderboard(*, round_: Round, names: bool | None = None) -> list[LeaderboardRow]:
    """Every annotator who judged or skipped a task of the round, most judgments first (then
    higher agreement, then name). ``names`` overrides the round's own choice of usernames."""
    counts = list(
        Assignment.objects.filter(task__round=round_, status__in=DONE)
        .values("annotator_id")
        .annotate(
            judged=Count("pk", filter=Q(status=Assignment.Status.SUBMITTED)),
            skipped=Count("pk", filter=Q(status=Assignment.Status.SKIPPED)),
        )
        .values_list("annotator_id", "judged", "skipped")
    )
    quality = annotator_quality(rounds=[round_.number])
    usernames = (
        usernames_by_id(user_ids=[c[0] for c in counts])
        if (round_.leaderboard_names if names is None else names)
        else {}
    )
    nothing = Estimate(value=None, low=None, high=None, n=0)
    rows = [
        (
            user_id,
            usernames.get(user_id)
            or leaderboard_pseudonym(user_id=user_id, round_number=round_.number),
            judged,
            skipped,
            quality[user_id].agreement if user_id in quality else nothing,
        )
        for user_id, judged, skipped in counts
    ]
    rows.sort(key=lambda r: (-r[2], -(r[4].value if r[4].value is not None else -1), r[1]))
    board: list[LeaderboardRow] = []
    for position, (user_id, name, judged, skipped, agreement) in enumerate(rows, start=1):
        rank = board[-1].rank if board and board[-1].judged == judged else position
        board.append(LeaderboardRow(rank, user_id, name, judged, skipped, agreement))
    return board


def round_set_leaderboard(
    *, round_id: int, enabled: bool | None = None, names: bool | None = None
) -> Round:
    """Turn a round's leaderboard on or off, and choose usernames or pseudonyms on it (None
    leaves a setting as it is)."""
    with transaction.atomic():
        round_ = Round.objects.select_for_update().filter(pk=round_id).first()
        if round_ is None:
            raise DomainError("No such round.", code="not_found", status=404)
        changed = []
        for field, value in (("leaderboard_enabled", enabled), ("leaderboard_names", names)):
            if value is not None and getattr(round_, field) != value:
                setattr(round_, field, value)
                changed.append(field)
        if changed:
            round_.save(update_fields=changed)
    return round_
