"""Celery tasks of training: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="training.tasks.training_run_execute", acks_late=True)
def training_run_execute(run_id: int) -> str:
    """Claim and run a training run (a redelivered job finds it claimed and returns)."""
    from .runs import training_run_execute as execute

    return execute(run_id=run_id).status
