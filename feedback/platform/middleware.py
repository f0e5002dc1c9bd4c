"""Headers every response carries."""

from __future__ import annotations

from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

# Enforced, not report-only. Pages load their own scripts and styles only; completions and prompts
# are untrusted model output and are rendered as inert text, so nothing inline is needed.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


# Swagger UI (the API docs page only) sets inline styles at run time; scripts stay 'self'-only.
API_DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


# Seconds a client should wait before retrying while the database is unreachable.
DATABASE_RETRY_AFTER_S = 5


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After: the request changed nothing (its transaction never committed), so
    the client may send it again; submissions are idempotent (DESIGN §4)."""
    if request.path.startswith("/api/"):
        body = {
            "code": "database_unavailable",
            "detail": "The database is unreachable; nothing was saved. Retry shortly.",
            "fields": {},
        }
        response: HttpResponse = JsonResponse(body, status=503)
    else:
        html = render_to_string(
            "frontend/error.html",
            {"message": "The database is unreachable; nothing was saved. Retry shortly."},
        )
        response = HttpResponse(html, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


def is_database_outage(exc: BaseException | None) -> bool:
    # IntegrityError and DataError are the request's own fault; these two mean the server or the
    # connection to it is gone (refused, reset, timed out, or closed under us).
    return isinstance(exc, OperationalError | InterfaceError)


class DatabaseUnavailableMiddleware:
    """A database outage in a view is a fast 503, not a 500. Django's connection handling
    (CONN_HEALTH_CHECKS, and closing a connection that raised) reconnects on the next request,
    so service resumes by itself when the database is back. Errors outside views (a session
    saved on the way out) reach ``frontend.views.server_error``, which answers the same."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_database_outage(exception):
            return database_unavailable(request)
        return None
