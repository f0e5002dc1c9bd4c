"""Celery tasks of training: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from feedback.platform.signals import job_finished


@shared_task(name="training.tasks.training_run_execute", acks_late=True)
def training_run_execute(run_id: int) -> str:
    """Claim and run a training run (a redelivered job finds it claimed and returns)."""
    from .execution import training_run_execute as execute

    try:
        return execute(run_id=run_id).status
    finally:
        job_finished.send(sender=training_run_execute, kind="training_run", object_id=run_id)


@shared_task(name="training.tasks.gate_evaluate", acks_late=True)
def gate_evaluate(gate_id: int) -> str:
    """Compare a candidate with the active policy and promote or reject it, or hand it to people
    (``judging``: the gate ends when they are done, ``gate_human_check``)."""
    from .gate import gate_evaluate as evaluate

    status = None
    try:
        status = evaluate(gate_id=gate_id).status
        return status
    finally:
        if status != "judging":  # ended (decided, or failed to run): announced as it ends
            job_finished.send(sender=gate_evaluate, kind="gate", object_id=gate_id)


@shared_task(name="training.tasks.gate_human_check", acks_late=True)
def gate_human_check(gate_id: int) -> str:
    """A side-by-side judgment came in: decide the gate if its round is done (idempotent; the
    decision announces itself, ``job_finished``)."""
    from .human_gate import gate_human_decide

    return gate_human_decide(gate_id=gate_id).status


@shared_task(name="training.tasks.training_runs_recover")
def training_runs_recover() -> list[int]:
    """Requeue, once, the runs whose worker stopped sending heartbeats."""
    from .runs import training_runs_recover as recover

    return recover()


@shared_task(name="training.tasks.automation_advance", acks_late=True)
def automation_advance(automation_id: int) -> str:
    """Move an automatic round on as far as it goes now (idempotent)."""
    from .automation import automation_advance as advance

    automation = advance(automation_id=automation_id)
    return automation.stage if automation else "missing"


@shared_task(name="training.tasks.automations_advance_all")
def automations_advance_all() -> list[int]:
    """Safety net: decide every judging gate that is ready, then advance every unfinished
    automatic round."""
    from .automation import automations_advance_all as advance_all
    from .human_gate import gates_judging_decide

    gates_judging_decide()
    return advance_all()
