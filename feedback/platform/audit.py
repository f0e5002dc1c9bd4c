"""The audit log: every state-changing request an admin makes, recorded as it is answered.

One middleware sees every route, the API's and the pages', so a new admin route is audited
without anyone remembering to add a call; the route's name and the ids in its URL say what was
done. Requests that change nothing (GET, HEAD, OPTIONS) and an admin's own annotation work are
left out. Refused and failed attempts are kept too, with their status code: a 403 or a 409 from
an admin account is as much worth reading as a 200. A few actions of other users are worth an
entry too, and their services record them (``audit_action_record``): an annotator's
correction of a submitted judgment says who replaced which judgment with which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from feedback.models import AuditEvent
from feedback.platform.roles import Role, user_has_role
from feedback.platform.throttle import client_ip

log = logging.getLogger(__name__)

SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}
# An admin who also annotates: the work itself is recorded as judgments, not as admin actions.
NOT_ADMIN_ACTIONS = {
    "api:task-next",
    "api:assignment-submit",
    "api:assignment-skip",
    "api:demonstration-next",
    "api:demonstration-create",
    # A correction is recorded by its service, for every annotator (``audit_action_record``).
    "api:judgment-revise",
    "api:auth-token",
    "frontend:login",
    "frontend:logout",
}


def audit_record(request: HttpRequest, response: HttpResponse) -> AuditEvent | None:
    """Record ``request`` if it is an admin action; its answer is ``response``."""
    if request.method in SAFE_METHODS or response.status_code >= 500:
        return None
    user = getattr(request, "user", None)  # DRF sets the token's user here too
    if user is None or not user.is_authenticated or not user_has_role(user, Role.ADMIN):
        return None
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    action = match.view_name
    if action in NOT_ADMIN_ACTIONS:
        return None
    return AuditEvent.objects.create(
        actor=user,
        actor_name=user.get_username(),
        action=action,
        method=request.method or "",
        path=request.path[:500],
        target={key: str(value) for key, value in match.kwargs.items()},
        status_code=response.status_code,
        ip=client_ip(request) if client_ip(request) != "unknown" else None,
    )


def audit_action_record(
    *, actor: Any, action: str, method: str, path: str, target: dict[str, str],
    status_code: int = 200,
) -> AuditEvent:  # fmt: skip
    """Record an action that the middleware does not see as an admin's, from the service that
    does it and inside its transaction, so that the record exists exactly when the action does:
    an annotator's correction of a judgment (``annotation.corrections``) is one."""
    return AuditEvent.objects.create(
        actor=actor, actor_name=actor.get_username(), action=action, method=method,
        path=path[:500], target=target, status_code=status_code,
    )  # fmt: skip


class AuditLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        try:
            audit_record(request, response)
        except DatabaseError:  # the action's answer stands; the outage is logged elsewhere
            log.exception("audit: could not record %s %s", request.method, request.path)
        return response


def audit_events(
    *, actor: str | None = None, action: str | None = None, since: datetime | None = None
) -> QuerySet[AuditEvent]:
    """Newest first, filtered by the actor's username, the route name and a start time."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_name=actor)
    if action:
        events = events.filter(action=action)
    if since is not None:
        events = events.filter(at__gte=since)
    return events


def audit_event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "at": event.at,
        "actor": event.actor_name,
        "action": event.action,
        "method": event.method,
        "path": event.path,
        "target": event.target,
        "status_code": event.status_code,
        "ip": event.ip,
    }
