"""The training app. Its ``ready`` connects the receivers that drive automatic rounds to the
signals the layers below send; who sends what is written down in ``training.automation``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from feedback.platform.signals import job_finished, judgment_recorded, round_completed

        job_finished.connect(_job_finished, dispatch_uid="training.automation.job_finished")
        judgment_recorded.connect(_judgment_recorded, dispatch_uid="training.automation.judgment")
        round_completed.connect(_round_closed, dispatch_uid="training.human_gate.round_closed")


def _job_finished(sender: Any, *, kind: str, object_id: int, **kwargs: Any) -> None:
    """A job an automatic round may wait on ended: move that round on, in this worker."""
    from .automation import automation_advance, automations_waiting_on

    for pk in automations_waiting_on(kind, object_id):
        automation_advance(automation_id=pk)


def _judgment_recorded(sender: Any, *, round_id: int, **kwargs: Any) -> None:
    """A judgment was stored: if its round is automated, or a gate's side-by-side round, let a
    worker check the count."""
    from .automation import automation_enqueue, automations_for_round

    for pk in automations_for_round(round_id):
        automation_enqueue(pk)
    _gates_check(round_id)


def _round_closed(sender: Any, *, round_id: int, **kwargs: Any) -> None:
    """An admin closed a gate's side-by-side round early: people decide on what they judged, now
    rather than at the beat's next pass. (A round the gate's own decision closes has no judging
    gate left by then, so nothing is queued.)"""
    _gates_check(round_id)


def _gates_check(round_id: int) -> None:
    from feedback.platform.outbox import outbox_enqueue

    from .human_gate import gates_judging

    for pk in gates_judging(round_id=round_id):
        outbox_enqueue(task="training.tasks.gate_human_check", args=[pk], queue="default")
