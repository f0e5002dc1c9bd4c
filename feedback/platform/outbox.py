"""The transactional outbox: work a request enqueues is recorded with the request's change.

``outbox_enqueue`` writes an ``OutboxMessage`` in the caller's transaction and, once that
transaction commits, tries to publish it. If the broker is down the request still succeeds: the
message waits, and ``outbox_publish`` (the beat task ``feedback.tasks.outbox_relay``, every few
seconds, and each worker as it starts) sends it when the broker is back. A rolled-back request
leaves no message, so no task runs on a row that was never written.

Delivery is at least once: a message is marked only after the broker took it, and if the mark
is lost (the database failed just then) the relay sends it again under the same task id. Every
task takes ids and is safe to run twice (each claims its row by status), so a second delivery
does nothing. Written here, not taken from a package: it is one model and one function, and it
publishes on a fresh broker connection under a row lock, which the relay's correctness rests on.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from feedback.models import OutboxMessage

log = logging.getLogger(__name__)

# Messages sent per relay pass; the rest wait for the next pass.
RELAY_BATCH = 200


def outbox_enqueue(*, task: str, args: list[Any], queue: str) -> OutboxMessage:
    """Record ``task(*args)`` for ``queue`` in the current transaction; publish after commit."""
    message = OutboxMessage.objects.create(task=task, args=args, queue=queue)
    transaction.on_commit(lambda: outbox_publish(message_ids=[message.pk]), robust=True)
    return message


def outbox_publish(*, message_ids: list[Any] | None = None, limit: int = RELAY_BATCH) -> int:
    """Send unpublished messages (``message_ids`` only, if given), oldest first; return how many
    the broker took. Rows are locked while they are sent (``SKIP LOCKED``), so the request's own
    publish and a relay pass never send one message at the same time. The first broker error ends
    the pass: the rest would fail the same way."""
    from celery import current_app

    sent = 0
    with transaction.atomic():
        pending = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
            published_at=None
        )
        if message_ids is not None:
            pending = pending.filter(pk__in=message_ids)
        messages = list(pending.order_by("created_at")[:limit])
        if not messages:
            return 0
        # A connection made now from the current settings, not the app's pool: a pooled
        # connection to a broker that went away is found dead only after its own retries. And
        # no retries of its own either (kombu's default backs off for about 6 s against a
        # refused port, and a request publishing on commit would wait that long): the relay is
        # the retry, every few seconds.
        options = {**current_app.conf.broker_transport_options, "max_retries": 0}
        with current_app.connection_for_write(
            url=settings.CELERY_BROKER_URL, transport_options=options
        ) as connection:
            for message in messages:
                message.attempts += 1
                try:
                    current_app.send_task(
                        message.task, args=message.args, queue=message.queue,
                        task_id=str(message.pk), connection=connection, retry=False,
                        ignore_result=True,  # callers follow the row's status, not a result
                    )  # fmt: skip
                except Exception as exc:  # the broker refused or is unreachable
                    message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                    message.save(update_fields=["attempts", "last_error"])
                    log.warning("outbox: %s not published yet (%s)", message, message.last_error)
                    break
                message.published_at = timezone.now()
                message.save(update_fields=["attempts", "published_at"])
                sent += 1
    return sent


def outbox_pending_count() -> int:
    return OutboxMessage.objects.filter(published_at=None).count()
