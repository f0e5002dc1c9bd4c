"""Celery tasks of the annotation instrument: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.tasks.leases_expire")
def leases_expire() -> int:
    """Return lapsed leases' slots to the pool (claimers also do this lazily, per task)."""
    from .distribution import leases_expire as expire

    return expire()


@shared_task(name="annotation.tasks.round_generate", acks_late=True)
def round_generate(round_id: int) -> dict[str, int]:
    """Generate a round's completions and publish its tasks (resumable, idempotent)."""
    from feedback.signals import job_finished

    from .generation import round_generate as generate

    try:
        round_ = generate(round_id=round_id)
    finally:
        job_finished.send(sender=round_generate, kind="round", object_id=round_id)
    return {
        "round": round_.number,
        "tasks": round_.tasks.count(),
        "skipped": round_.prompts_skipped,
    }
