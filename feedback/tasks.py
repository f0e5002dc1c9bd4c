"""Celery tasks of the core: take ids, call a service, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="feedback.tasks.deployment_run", acks_late=True)
def deployment_run(deployment_id: int) -> str:
    """Check that the new version answers, then make it the active one."""
    from feedback.platform.signals import job_finished
    from feedback.serving.policies import deployment_run as run

    try:
        return run(deployment_id=deployment_id).status
    finally:
        job_finished.send(sender=deployment_run, kind="deployment", object_id=deployment_id)


@shared_task(name="feedback.tasks.outbox_relay")
def outbox_relay() -> int:
    """Queue the webhook deliveries whose retry is due, then publish what the outbox holds
    (those, and work recorded while the broker was down)."""
    from feedback.platform.outbox import outbox_publish
    from feedback.platform.webhooks.services import webhook_retries_enqueue

    webhook_retries_enqueue()
    return outbox_publish()


@shared_task(name="feedback.tasks.webhook_deliver", acks_late=True)
def webhook_deliver(delivery_id: int) -> str:
    """One attempt at a webhook delivery; a failure is queued again after its backoff."""
    from feedback.platform.webhooks.services import webhook_delivery_attempt

    return webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="feedback.tasks.throttle_windows_prune")
def throttle_windows_prune() -> int:
    """Drop the rate limits' log rows that no period reaches back to any more."""
    from feedback.platform.throttle import throttle_windows_prune as prune

    return prune()
