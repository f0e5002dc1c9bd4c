"""Signals between the apps, so that the core never imports what builds on it.

``job_finished`` is sent by a Celery task when its job ended (whatever the outcome), with
``kind`` (``training_run``, ``gate``, ``deployment``, ``round``) and ``object_id``.
``judgment_recorded`` is sent after a new judgment is committed, with ``round_id``, for a
round whose ``announce_judgments`` is set (an automation sets it: a submit to any other round
pays no read for a listener it does not have).
``round_completed`` is sent after a round's closing is committed
(``annotation.rounds.round_close``), with ``round_id``.
``export_ready`` is sent after an export job's file is written
(``annotation.exports.jobs``), with ``export_job_id``.

Automatic rounds (``training.automation``) listen to the first two. Webhooks
(feedback/platform/webhooks/events.py) listen to all but ``judgment_recorded``: they are
connected here, beside the signals, because any code that sends one has imported this module,
so no sender can run before they are connected, in the web process or in a worker.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

job_finished = Signal()
judgment_recorded = Signal()
round_completed = Signal()
export_ready = Signal()


def _webhooks_job_finished(sender: Any, *, kind: str, object_id: Any, **kwargs: Any) -> None:
    from feedback.platform.webhooks.events import on_job_finished

    on_job_finished(kind, object_id)


def _webhooks_round_completed(sender: Any, *, round_id: int, **kwargs: Any) -> None:
    from feedback.platform.webhooks.events import on_round_completed

    on_round_completed(round_id)


def _webhooks_export_ready(sender: Any, *, export_job_id: Any, **kwargs: Any) -> None:
    from feedback.platform.webhooks.events import on_export_ready

    on_export_ready(export_job_id)


job_finished.connect(_webhooks_job_finished, dispatch_uid="feedback.webhooks.job_finished")
round_completed.connect(_webhooks_round_completed, dispatch_uid="feedback.webhooks.round")
export_ready.connect(_webhooks_export_ready, dispatch_uid="feedback.webhooks.export")
