"""The admin's webhooks page: register a receiver (its secret shown once), send it a test ping,
remove it, and read the delivery log. Each view checks the role and calls a service of
feedback/platform/webhooks/."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from feedback.platform.errors import DomainError
from feedback.platform.roles import Role
from feedback.platform.webhooks.events import EVENTS
from feedback.platform.webhooks.services import (
    MAX_ATTEMPTS,
    webhook_create,
    webhook_delete,
    webhook_deliveries,
    webhook_list,
    webhook_ping,
)

from .views import role_required

LOG_ROWS = 100


@role_required(Role.ADMIN)
def manage_webhooks(request: HttpRequest) -> HttpResponse:
    """GET: the webhooks and the delivery log; POST: register one."""
    if request.method == "POST":
        try:
            webhook, secret = webhook_create(
                url=request.POST.get("url", "").strip(),
                events=request.POST.getlist("events"),
                description=request.POST.get("description", "").strip()[:200],
                created_by=request.user,
            )
        except DomainError as exc:
            messages.error(request, exc.detail)
        else:
            # Shown on the next page only: the session forgets it once read.
            request.session["webhook_secret"] = {"id": webhook.pk, "secret": secret}
            messages.success(request, f"Webhook {webhook.pk} registered.")
        return redirect("frontend:manage-webhooks")
    return render(
        request,
        "frontend/webhooks.html",
        {
            "webhooks": webhook_list(),
            "deliveries": webhook_deliveries()[:LOG_ROWS],
            "events": EVENTS,
            "new_secret": request.session.pop("webhook_secret", None),
            "max_attempts": MAX_ATTEMPTS,
            "log_rows": LOG_ROWS,
        },
    )


@require_POST
@role_required(Role.ADMIN)
def manage_webhook_action(request: HttpRequest, webhook_id: int, action: str) -> HttpResponse:
    try:
        if action == "ping":
            delivery = webhook_ping(webhook_id=webhook_id)
            messages.success(request, f"Test delivery {delivery.pk} queued; see the log below.")
        elif action == "delete":
            webhook_delete(webhook_id=webhook_id)
            messages.success(request, f"Webhook {webhook_id} removed, with its deliveries.")
        else:
            messages.error(request, f"Unknown action {action[:40]!r}.")
    except DomainError as exc:
        messages.error(request, exc.detail)
    return redirect("frontend:manage-webhooks")
