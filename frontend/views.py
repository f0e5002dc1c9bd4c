"""Pages. The home page says, per role, where to go next."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from annotation.models import Round
from feedback.roles import Role, user_roles


@login_required
def home(request: HttpRequest) -> HttpResponse:
    roles = user_roles(request.user)
    context = {
        "roles": sorted(roles),
        "is_annotator": Role.ANNOTATOR in roles,
        "is_admin": Role.ADMIN in roles,
        "is_researcher": Role.RESEARCHER in roles,
        "open_rounds": Round.objects.filter(status=Round.Status.OPEN).order_by("number")
        if roles & {Role.ADMIN, Role.RESEARCHER}
        else [],
    }
    return render(request, "frontend/home.html", context)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"code": "not_found", "detail": "No such route.", "fields": {}}, status=404
        )
    return render(request, "frontend/error.html", {"message": "Page not found."}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"code": "server_error", "detail": "Internal error; it has been logged.", "fields": {}},
            status=500,
        )
    return render(request, "frontend/error.html", {"message": "Something went wrong."}, status=500)
