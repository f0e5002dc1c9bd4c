"""Celery tasks of training: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.tasks.training_run_execute", acks_late=True)
def training_run_execute(run_id: int) -> str:
    """Claim and run a training run (a redelivered job finds it claimed and returns)."""
    from .runs import training_run_execute as execute

    return execute(run_id=run_id).status


@shared_task(name="training.tasks.gate_evaluate", acks_late=True)
def gate_evaluate(gate_id: int) -> str:
    """Compare a candidate with the active policy and promote or reject it."""
    from .gate import gate_evaluate as evaluate

    return evaluate(gate_id=gate_id).status


@shared_task(name="training.tasks.training_runs_recover")
def training_runs_recover() -> list[int]:
    """Requeue, once, the runs whose worker stopped sending heartbeats."""
    from .runs import training_runs_recover as recover

    return recover()
