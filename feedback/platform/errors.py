"""One domain error type for services, and the API's single JSON error shape.

Every API error body is ``{"code": str, "detail": str, "fields": {dotted.path: [reasons]}}``;
``fields`` names each bad field (``scores.12.helpful``, ``ranking``, ``line 3: messages``) so a
client can put the reason next to the control it belongs to.

Every error body is bounded, whatever the request: at most ``MAX_FIELDS`` fields (the detail ends
"… and N more." when some were left out), each name and reason cut at ``MAX_TEXT`` characters,
lists beside them (an import's bad lines) cut at ``MAX_FIELDS`` entries. A hostile body of a
million bad entries once came back as a 113 MB error naming each.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A service refused: the API answers ``status`` with this code, detail and field reasons."""

    def __init__(
        self,
        detail: str,
        *,
        code: str = "invalid",
        status: int = 400,
        fields: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.status = status
        self.fields = fields or {}
        self.extra = extra or {}


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error structure into ``{"a.b.0.c": ["reason", ...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "" if key in ("non_field_errors", "__all__") and not prefix else str(key)
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            for sub_path, reasons in flatten_errors(value, path).items():
                flat.setdefault(sub_path, []).extend(reasons)
    elif isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        flat[prefix] = [str(e) for e in errors]
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            if value:
                for sub_path, reasons in flatten_errors(
                    value, f"{prefix}.{index}" if prefix else str(index)
                ).items():
                    flat.setdefault(sub_path, []).extend(reasons)
    else:
        flat[prefix] = [str(errors)]
    return flat


MAX_FIELDS = 20
MAX_TEXT = 500
MAX_DETAIL = 2000


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fields_bounded(fields: dict[str, list[str]]) -> tuple[dict[str, list[str]], int]:
    """The first MAX_FIELDS fields, each name and reason cut at MAX_TEXT characters (and at
    most MAX_FIELDS reasons a field); and how many fields were left out."""
    shown = {
        _cut(str(path)): [_cut(str(reason)) for reason in reasons[:MAX_FIELDS]]
        for path, reasons in list(fields.items())[:MAX_FIELDS]
    }
    return shown, max(0, len(fields) - MAX_FIELDS)


def errors_detail(fields: dict[str, list[str]]) -> str:
    """One line naming each bad field and its reasons, the first MAX_FIELDS of them."""
    shown, left_out = fields_bounded(fields)
    detail = "; ".join(f"{path or 'body'}: {' '.join(reasons)}" for path, reasons in shown.items())
    if not left_out:
        return _cut(detail, MAX_DETAIL)
    more = f"; … and {left_out} more."
    return _cut(detail, MAX_DETAIL - len(more)) + more


def error_body(
    code: str, detail: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The error body, bounded (see the module's doc)."""
    shown, _ = fields_bounded(fields or {})
    return {"code": code, "detail": _cut(detail, MAX_DETAIL), "fields": shown}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body = error_body(exc.code, exc.detail, exc.fields)
        body.update(
            (key, value[:MAX_FIELDS] if isinstance(value, list) else value)
            for key, value in exc.extra.items()
        )
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        response.data = error_body("invalid", errors_detail(fields) or "Invalid input.", fields)
        response.status_code = status.HTTP_400_BAD_REQUEST
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        # A body that could not be read (bad JSON, too large, wrong media type): the field at
        # fault is the body itself.
        unreadable = isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType)
        fields = {"body": [str(exc.detail)]} if unreadable or exc.status_code == 413 else None
        response.data = error_body(code, str(exc.detail), fields)
    return response


@cache
def error_schema() -> Any:
    """The error body as one OpenAPI component, for ``extend_schema(responses=...)``."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    return inline_serializer(
        "Error",
        {
            "code": serializers.CharField(),
            "detail": serializers.CharField(),
            "fields": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField())
            ),
        },
    )
