"""Celery tasks of the annotation instrument: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="annotation.tasks.leases_expire")
def leases_expire() -> int:
    """Return lapsed leases' slots to the pool (claimers also do this lazily, per task)."""
    from .distribution import leases_expire as expire

    return expire()
