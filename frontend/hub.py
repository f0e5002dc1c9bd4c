"""The snapshot page's "Push to the Hub" button: the snapshot, with its datasheet as the dataset
card, goes to a private Hugging Face dataset repo (training.hub). The push runs in the request:
offline it fails at once, and the message says so."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from feedback.platform.errors import DomainError
from feedback.platform.roles import Role
from training.hub import snapshot_push_to_hub

from .views import role_required


@require_POST
@role_required(Role.RESEARCHER, Role.ADMIN)
def research_snapshot_push(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    repo_id = request.POST.get("repo_id", "").strip()
    try:
        url = snapshot_push_to_hub(snapshot_id=snapshot_id, repo_id=repo_id)
    except DomainError as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Pushed to {url} (private).")
    return redirect("frontend:research-snapshot", snapshot_id=snapshot_id)
