"""One domain error type for services, and the API's single JSON error shape.

Every API error body is ``{"code": str, "detail": str, "fields": {dotted.path: [reasons]}}``;
``fields`` names each bad field (``scores.12.helpful``, ``ranking``, ``line 3: messages``) so a
client can put the reason next to the control it belongs to.
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


def error_body(
    code: str, detail: str, fields: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {"code": code, "detail": detail, "fields": fields or {}}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body = error_body(exc.code, exc.detail, exc.fields)
        body.update(exc.extra)
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
        detail = "; ".join(f"{k or 'body'}: {' '.join(v)}" for k, v in fields.items())
        response.data = error_body("invalid", detail or "Invalid input.", fields)
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
