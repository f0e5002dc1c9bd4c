"""Pages every role shares, and the annotator's. Each view checks the role, calls services or
selectors of the other packages, renders. The admin pages are in ``manage_views`` (rounds,
rubrics, audit) and ``training_views`` (training, the gate, deployment); the researcher's in
``research``.

The annotator's workspace and the demonstration page are small shells: their scripts talk to the
JSON API, so the page and a script see the same rules and the same errors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from annotation.progress import LeaderboardRow, annotator_progress_by_round, round_leaderboard
from annotation.selectors import round_get
from feedback.platform.middleware import database_unavailable, is_database_outage
from feedback.platform.roles import Role, user_roles
from feedback.platform.throttle import (
    login_attempt_begin,
    login_attempt_succeeded,
    login_attempt_void,
)


def role_required(
    *roles: Role,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not user_roles(request.user) & set(roles):
                return render(
                    request,
                    "frontend/error.html",
                    {"message": "Your account does not have the role this page needs."},
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send each role to its own page."""
    roles = user_roles(request.user)
    if Role.ADMIN in roles:
        return redirect("frontend:manage")
    if Role.RESEARCHER in roles:
        return redirect("frontend:research")
    if Role.ANNOTATOR in roles:
        return redirect("frontend:workspace")
    return render(request, "frontend/error.html", {"message": "Your account has no role yet."})


@role_required(Role.ANNOTATOR)
def workspace(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/workspace.html", {"lease_seconds": settings.LEASE_SECONDS})


# The progress page shows the leaderboards of at most this many rounds, newest first.
LEADERBOARD_ROUNDS = 5


def leaderboard_rows(board: list[LeaderboardRow], *, viewer_id: int) -> list[dict[str, Any]]:
    """A leaderboard as a table shows it: agreement as a share with its interval and the pairs
    it rests on, and the viewer's own row marked."""
    rows = []
    for row in board:
        estimate = row.agreement
        agreement = "n/a"
        if estimate.value is not None:
            interval = f"{estimate.low:.2f} to {estimate.high:.2f}"
            agreement = f"{estimate.value:.2f} ({interval}), {estimate.n} pairs"
        rows.append({"row": row, "you": row.annotator_id == viewer_id, "agreement": agreement})
    return rows


@role_required(Role.ANNOTATOR)
def my_progress(request: HttpRequest) -> HttpResponse:
    """Your progress through each round, and the leaderboards an admin has turned on."""
    rounds = annotator_progress_by_round(annotator=request.user)
    boards = {}
    for progress in [r for r in rounds if r.leaderboard][:LEADERBOARD_ROUNDS]:
        round_ = round_get(round_id=progress.round_id)
        if round_ is not None:
            board = round_leaderboard(round_=round_)
            boards[progress.round_id] = leaderboard_rows(board, viewer_id=request.user.pk)
    return render(
        request,
        "frontend/progress.html",
        {"rounds": [(r, boards.get(r.round_id)) for r in rounds]},
    )


@role_required(Role.ANNOTATOR)
def demonstrate(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/demonstrate.html")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = {"code": "not_found", "detail": "No such route.", "fields": {}}
        return JsonResponse(body, status=404)
    return render(request, "frontend/error.html", {"message": "Page not found."}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_database_outage(sys.exc_info()[1]):  # raised outside a view (see the middleware)
        return database_unavailable(request)
    if _is_api(request):
        body = {
            "code": "server_error",
            "detail": "Internal error; it has been logged.",
            "fields": {},
        }
        return JsonResponse(body, status=500)
    return render(request, "frontend/error.html", {"message": "Something went wrong."}, status=500)


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in page under the sign-in limits (feedback/platform/throttle.py): failures
    per account and address, and per address. Past them the pair (past the address's ceiling,
    the address) is answered 429 and told when to try again, whether or not the password was
    right; the account from anywhere else signs in."""

    template_name = "frontend/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.attempt = login_attempt_begin(request, username=request.POST.get("username", ""))
        if self.attempt.wait is None:
            return super().post(request, *args, **kwargs)
        # The form is not validated: that would check the password, which is what is limited.
        seconds = math.ceil(self.attempt.wait)
        context = self.get_context_data(
            throttled=f"Too many sign-in attempts. Try again in {seconds} s."
        )
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(seconds)
        return response

    def form_valid(self, form: Any) -> HttpResponse:
        login_attempt_succeeded(self.attempt)
        return super().form_valid(form)

    def form_invalid(self, form: Any) -> HttpResponse:
        if not form.non_field_errors():  # a field was missing: no password was checked
            login_attempt_void(self.attempt)
        return super().form_invalid(form)
