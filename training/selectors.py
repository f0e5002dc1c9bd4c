"""Reads of the training records that pages and API views show (selectors): runs, snapshots,
gates and a round's automation. Views validate, call one of these (or a service), and
render."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Automation, DatasetSnapshot, GateEvaluation, TrainingRun


def training_run_list() -> QuerySet[TrainingRun]:
    """Runs, newest first, with their base and produced policies and their snapshots."""
    return TrainingRun.objects.select_related(
        "base_policy", "produced_policy", "snapshot"
    ).order_by("-id")


def training_run_get(*, run_id: int) -> TrainingRun | None:
    return training_run_list().filter(pk=run_id).first()


def snapshot_list() -> QuerySet[DatasetSnapshot]:
    return DatasetSnapshot.objects.order_by("-id")


def snapshot_get(*, snapshot_id: int) -> DatasetSnapshot | None:
    return DatasetSnapshot.objects.filter(pk=snapshot_id).first()


def gate_get(*, gate_id: int) -> GateEvaluation | None:
    related = GateEvaluation.objects.select_related("candidate", "baseline")
    return related.filter(pk=gate_id).first()


def automation_of_round(*, round_id: int) -> Automation | None:
    """A round's automation with everything its page shows."""
    related = Automation.objects.select_related(
        "round",
        "snapshot",
        "reward_run",
        "policy_run__produced_policy",
        "gate",
        "deployment",
        "next_round",
    )
    return related.filter(round_id=round_id).first()
