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
    from feedback.platform.signals import job_finished

    from .round_generation import round_generate as generate

    try:
        round_ = generate(round_id=round_id)
    finally:
        job_finished.send(sender=round_generate, kind="round", object_id=round_id)
    return {
        "round": round_.number,
        "tasks": round_.tasks.count(),
        "skipped": round_.prompts_skipped,
    }


@shared_task(name="annotation.tasks.rounds_generation_recover")
def rounds_generation_recover() -> list[int]:
    """Queue again the generating rounds whose worker died (stale heartbeat)."""
    from .round_generation import rounds_generation_recover as recover

    return recover()


@shared_task(name="annotation.tasks.export_job_run", acks_late=True)
def export_job_run(job_id: str) -> dict[str, object]:
    """Write one export job's file (claims it; a second delivery does nothing)."""
    from .exports.jobs import export_job_run as run

    job = run(job_id=job_id)
    return {"job": str(job.pk), "status": job.status, "rows": job.rows}


@shared_task(name="annotation.tasks.export_jobs_recover")
def export_jobs_recover() -> list[str]:
    """Queue again the export jobs whose worker died (stale heartbeat)."""
    from .exports.jobs import export_jobs_recover as recover

    return recover()
