"""Webhooks: registering them, recording an event's deliveries, and delivering them with retries.

An event becomes one ``WebhookDelivery`` per active webhook subscribed to it, written with an
outbox message (feedback/platform/outbox.py) in one transaction; the worker's task
``feedback.tasks.webhook_deliver`` claims the delivery (a conditional UPDATE, so a message
delivered twice sends once) and makes one attempt (sending.py). A failed attempt waits
``RETRY_BASE_S * RETRY_FACTOR ** (attempts - 1)`` (30 s, 2 min, 8 min, 32 min, about 2 h) and
is queued again through the outbox by ``webhook_retries_enqueue``, which every relay pass runs;
after ``MAX_ATTEMPTS`` it is failed for good. A claim whose worker died is due again once
``CLAIM_STALE_S`` passed, by the same pass.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from feedback.models import Webhook, WebhookDelivery
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue

from .events import EVENTS, PING
from .sending import webhook_post
from .targets import target_check

MAX_ATTEMPTS = 6
RETRY_BASE_S = 30
RETRY_FACTOR = 4
# Longer than an attempt can take (three hops under sending.TIMEOUT), so a live claim is never
# taken over.
CLAIM_STALE_S = 120
TASK = "feedback.tasks.webhook_deliver"


def webhook_queue() -> str:
    return getattr(settings, "WEBHOOK_QUEUE", "default")


def retry_delay(attempts: int) -> timedelta:
    """How long a delivery waits after its ``attempts``-th failed attempt."""
    return timedelta(seconds=RETRY_BASE_S * RETRY_FACTOR ** max(attempts - 1, 0))


def webhook_list() -> QuerySet[Webhook]:
    return Webhook.objects.select_related("created_by").order_by("-id")


def webhook_deliveries(*, webhook_id: int | None = None) -> QuerySet[WebhookDelivery]:
    """The delivery log, newest first (one webhook's if given)."""
    deliveries = WebhookDelivery.objects.select_related("webhook").order_by("-id")
    return deliveries if webhook_id is None else deliveries.filter(webhook_id=webhook_id)


def _events_check(events: list[str]) -> list[str]:
    unknown = [event for event in events if event not in EVENTS]
    if unknown or not events:
        why = f"Unknown events: {', '.join(unknown)}." if unknown else "Name at least one event."
        raise DomainError(why, fields={"events": [f"{why} Known: {', '.join(EVENTS)}."]})
    return list(dict.fromkeys(events))


def webhook_create(
    *, url: str, events: list[str], description: str = "", created_by: Any = None
) -> tuple[Webhook, str]:
    """Register a webhook; returns it and its signing secret (shown to the admin once). The URL
    is checked now, so a forbidden one is a 400 at once; each attempt checks it again."""
    target_check(url)
    events = _events_check(events)
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    webhook = Webhook.objects.create(
        url=url, events=events, secret=secret, description=description, created_by=created_by
    )
    return webhook, secret


def webhook_get(*, webhook_id: int) -> Webhook:
    webhook = Webhook.objects.filter(pk=webhook_id).first()
    if webhook is None:
        raise DomainError("No such webhook.", code="not_found", status=404)
    return webhook


def webhook_delete(*, webhook_id: int) -> None:
    """Remove a webhook and its delivery log; a delivery already queued finds nothing to send."""
    webhook_get(webhook_id=webhook_id).delete()


def _payload(event: str, event_id: Any, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"id": str(event_id), "event": event, "created_at": at.isoformat(), "data": data}


@transaction.atomic
def _deliveries_create(
    webhooks: list[Webhook], event: str, data: dict[str, Any]
) -> list[WebhookDelivery]:
    first = WebhookDelivery(event=event, payload={})
    payload = _payload(event, first.event_id, data, timezone.now())
    made = []
    for webhook in webhooks:
        delivery = WebhookDelivery.objects.create(
            webhook=webhook, event=event, event_id=first.event_id, payload=payload
        )
        outbox_enqueue(task=TASK, args=[delivery.pk], queue=webhook_queue())
        made.append(delivery)
    return made


def webhook_event_emit(*, event: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Record ``event`` for every active webhook subscribed to it; each is sent after commit."""
    # Filtered here, not by the database: SQLite has no JSON containment, and webhooks are few.
    webhooks = [hook for hook in Webhook.objects.filter(active=True) if event in hook.events]
    return _deliveries_create(webhooks, event, data) if webhooks else []


def webhook_ping(*, webhook_id: int) -> WebhookDelivery:
    """A test delivery to one webhook, whatever its events."""
    webhook = webhook_get(webhook_id=webhook_id)
    data = {"webhook_id": webhook.pk, "message": "A test delivery from Feedback Loop."}
    return _deliveries_create([webhook], PING, data)[0]


def _body(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """Claim a queued delivery and make one attempt; its status after. Safe to run twice: only
    one run claims it, the other returns the status it found."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.QUEUED
    ).update(
        status=WebhookDelivery.Status.SENDING,
        attempts=F("attempts") + 1,
        next_attempt_at=now + timedelta(seconds=CLAIM_STALE_S),
    )
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or not claimed:
        return delivery.status if delivery else "gone"
    webhook = delivery.webhook
    attempt = webhook_post(
        url=webhook.url, secret=webhook.secret, body=_body(delivery),
        headers={"X-Feedback-Event": delivery.event, "X-Feedback-Delivery": str(delivery.pk)},
    )  # fmt: skip
    delivery.last_status_code = attempt.status_code
    delivery.last_error = attempt.error
    if attempt.ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.next_attempt_at = None
    elif delivery.attempts >= MAX_ATTEMPTS or not webhook.active:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.status = WebhookDelivery.Status.RETRYING
        delivery.next_attempt_at = timezone.now() + retry_delay(delivery.attempts)
    delivery.save(
        update_fields=[
            "status", "last_status_code", "last_error", "delivered_at", "next_attempt_at",
        ]
    )  # fmt: skip
    return delivery.status


def webhook_retries_enqueue(*, now: datetime | None = None) -> int:
    """Queue again, through the outbox, every delivery whose wait is over (and every claim gone
    stale); how many. Run by each relay pass (``feedback.tasks.outbox_relay``)."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .filter(
                status__in=[WebhookDelivery.Status.RETRYING, WebhookDelivery.Status.SENDING],
                next_attempt_at__lte=now,
            )
            .order_by("next_attempt_at")[:200]
        )
        for delivery in due:
            if delivery.attempts >= MAX_ATTEMPTS:  # a stale claim of the last attempt
                delivery.status = WebhookDelivery.Status.FAILED
                delivery.last_error = delivery.last_error or "The worker was lost mid-attempt."
                delivery.next_attempt_at = None
            else:
                delivery.status = WebhookDelivery.Status.QUEUED
                delivery.next_attempt_at = None
                outbox_enqueue(task=TASK, args=[delivery.pk], queue=webhook_queue())
            delivery.save(update_fields=["status", "last_error", "next_attempt_at"])
    return len(due)
