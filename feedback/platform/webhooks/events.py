"""The events webhooks are told of, and the signal (feedback/platform/signals.py) each comes from.

=========================  ========================================================  ===============
event                      when                                                      signal
=========================  ========================================================  ===============
``round.completed``        a round was closed (by an admin, or by its automation)    round_completed
``training_run.finished``  a training run ended: succeeded, failed or cancelled      job_finished
``gate.decided``           a promotion gate's evaluation ended                       job_finished
``policy.deployed``        a deployment switched serving to a new version            job_finished
``policy.rolled_back``     a rollback switched serving back to the earlier version   job_finished
``export.ready``           an export job's file is written and can be downloaded     export_ready
``ping``                   an admin asked for a test delivery (not subscribable)     (the API)
=========================  ========================================================  ===============

The data of an event names its object by id, with the API path that tells the rest: the layers
above the base one (rounds, runs, gates, exports) are not read from here (tests/test_layers.py),
and a receiver that wants more asks the API with a token. A deployment is the base layer's own
record, so its events carry what happened. A deployment that failed sends no event: serving did
not change.
"""

from __future__ import annotations

import logging
from typing import Any

from django.urls import NoReverseMatch, reverse

log = logging.getLogger(__name__)

EVENTS = {
    "round.completed": "A round was closed.",
    "training_run.finished": "A training run ended (succeeded, failed or cancelled).",
    "gate.decided": "A promotion gate's evaluation ended.",
    "policy.deployed": "Serving switched to a new policy version.",
    "policy.rolled_back": "Serving switched back to the earlier policy version.",
    "export.ready": "An export job's file is ready to download.",
}
PING = "ping"

# job_finished's kind → (event, the id's key in the data, the API route of the object).
JOB_EVENTS = {
    "training_run": ("training_run.finished", "training_run_id", "api:training-run-detail"),
    "gate": ("gate.decided", "gate_id", "api:gate-detail"),
}


def _api_path(route: str, object_id: Any) -> str | None:
    try:
        return reverse(route, args=[object_id])
    except NoReverseMatch:  # the app that serves it is not installed
        return None


def object_event_data(key: str, object_id: Any, route: str) -> dict[str, Any]:
    return {key: object_id, "api": _api_path(route, object_id)}


def deployment_event(deployment_id: int) -> tuple[str, dict[str, Any]] | None:
    """The event a finished deployment makes (None: it failed or is not finished)."""
    from feedback.models import Deployment

    deployment = (
        Deployment.objects.select_related("policy_version", "previous")
        .filter(pk=deployment_id, status=Deployment.Status.DONE)
        .first()
    )
    if deployment is None:
        return None
    previous = deployment.previous
    data = {
        "deployment_id": deployment.pk,
        "api": _api_path("api:deployment-detail", deployment.pk),
        "policy_version": {
            "id": deployment.policy_version_id,
            "name": deployment.policy_version.name,
        },
        "previous": {"id": previous.pk, "name": previous.name} if previous else None,
        "backend": deployment.backend,
        "finished_at": deployment.finished_at.isoformat() if deployment.finished_at else None,
    }
    rolled_back = deployment.action == Deployment.Action.ROLLBACK
    return ("policy.rolled_back" if rolled_back else "policy.deployed"), data


def _emit_safely(event: str, data: dict[str, Any]) -> None:
    """Record the event's deliveries; never raise into the job that sent the signal (its own
    outcome is already stored, and the other receivers must still run)."""
    from .services import webhook_event_emit

    try:
        webhook_event_emit(event=event, data=data)
    except Exception:
        log.exception("webhooks: the %s event could not be recorded", event)


def on_job_finished(kind: str, object_id: Any) -> None:
    if kind in JOB_EVENTS:
        event, key, route = JOB_EVENTS[kind]
        _emit_safely(event, object_event_data(key, object_id, route))
    elif kind == "deployment":
        try:
            made = deployment_event(object_id)
        except Exception:
            log.exception("webhooks: deployment %s could not be read", object_id)
            return
        if made is not None:
            _emit_safely(*made)


def on_round_completed(round_id: int) -> None:
    _emit_safely("round.completed", object_event_data("round_id", round_id, "api:round-detail"))


def on_export_ready(export_job_id: Any) -> None:
    data = object_event_data("export_job_id", str(export_job_id), "api:export-job-detail")
    data["download"] = _api_path("api:export-job-download", str(export_job_id))
    _emit_safely("export.ready", data)
