"""An annotator's own progress through a round, for the workspace's "task 6 of 24"."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q

from .models import Assignment, ComparisonTask, Round


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
