"""Strict requests: a field or query parameter a route does not read is a 400 naming it, and a
list is refused by its length before any of its entries is looked at.

DRF's serializers drop the fields they do not declare, and a view reads only the query
parameters it knows, so a client that sends ``status`` (or misspells ``gold_rate``) is told
nothing and believes it took effect. The judgment body has always been read strictly; these
pieces make every route do the same, with the same message:

- ``StrictSerializer`` (or ``StrictFieldsMixin`` on another serializer class): its input is
  refused when it holds a key the serializer does not declare as writable;
- ``StrictApiView``: its query string may hold only the view's ``query_fields`` (none unless it
  names some), and no NUL anywhere (PostgreSQL can neither compare nor store one);
- ``body_strict``: a route that takes no body (or reads one by hand) names what it accepts;
- ``BoundedListField`` and ``BoundedDictField``: DRF checks a ListField's ``max_length`` only
  after validating every entry (a million entries, a million error messages); these check the
  length first.

Hand-written, a set difference each: DRF has no strict mode, and the packages that add one
bring a serializer hierarchy of their own for these few lines.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView

from .errors import DomainError, errors_detail

UNKNOWN_FIELD = "Unknown field; allowed: {allowed}."
UNKNOWN_PARAMETER = "Unknown query parameter; allowed: {allowed}."
NUL = "Must not contain NUL characters."
# A client's name for a field is echoed back: at most this much of it.
NAME_SHOWN = 100


def shown(key: object) -> str:
    """A client's key as it can appear in an error: lone surrogates (no UTF-8 encoding) and
    NUL escaped so rendering the error cannot fail, and cut at NAME_SHOWN characters."""
    text = str(key).replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= NAME_SHOWN else text[: NAME_SHOWN - 1] + "…"


def unknown_keys(
    keys: Iterable[object], allowed: Collection[str], *, reason: str = UNKNOWN_FIELD
) -> dict[str, list[str]]:
    """``{name: [reason]}`` for each key that is not ``allowed``, in the client's order; the
    reason lists what is allowed (in ``allowed``'s order)."""
    listed = ", ".join(allowed if isinstance(allowed, list | tuple) else sorted(allowed)) or "none"
    return {shown(key): [reason.format(allowed=listed)] for key in keys if key not in allowed}


def body_strict(request: Request, allowed: Collection[str] = ()) -> None:
    """Refuse a body holding any field but ``allowed`` (for a route that takes none: any body
    but an empty one)."""
    data = request.data
    if isinstance(data, Mapping):
        unknown = unknown_keys(data, allowed)
    elif data in (None, "", []):
        unknown = {}
    else:
        unknown = {"body": ["Must be a JSON object (or nothing) here."]}
    if unknown:
        raise DomainError(errors_detail(unknown), fields=unknown)


def query_params_strict(request: Request, allowed: Collection[str] = ()) -> None:
    """Refuse NUL in any query parameter (name or value), then any parameter not ``allowed``."""
    for name, values in request.query_params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            problem = {shown(name): [NUL]}
            raise DomainError(errors_detail(problem), fields=problem)
    unknown = unknown_keys(request.query_params, allowed, reason=UNKNOWN_PARAMETER)
    if unknown:
        raise DomainError(errors_detail(unknown), fields=unknown)


class StrictApiView(APIView):
    """An APIView that reads only ``query_fields`` from the query string: any other parameter
    is a 400 naming it, checked once the caller is known to be allowed in (so an outsider still
    gets their 401 or 403 first). Its body is its input serializer's to check."""

    query_fields: Collection[str] = ()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        query_params_strict(request, self.query_fields)


class StrictFieldsMixin:
    """A serializer that refuses a key it does not declare as writable, with the others' errors."""

    def to_internal_value(self, data: Any) -> Any:
        unknown: dict[str, list[str]] = {}
        if isinstance(data, Mapping):
            writable = [name for name, field in self.fields.items() if not field.read_only]  # type: ignore[attr-defined]
            unknown = unknown_keys(data, writable)
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except ValidationError as error:
            if unknown and isinstance(error.detail, dict):
                raise ValidationError({**error.detail, **unknown}) from None
            raise
        if unknown:
            raise ValidationError(unknown)
        return value


class StrictSerializer(StrictFieldsMixin, serializers.Serializer):
    """A plain input serializer that refuses unknown fields."""


def _too_long(data: Any, limit: int | None) -> None:
    if limit is not None and isinstance(data, Collection) and len(data) > limit:
        raise ValidationError(f"At most {limit} entries; got {len(data)}.", code="max_length")


class BoundedListField(serializers.ListField):
    """A ListField whose ``max_length`` is checked before any entry is (DRF checks it after)."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        super().__init__(max_length=max_length, **kwargs)

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, str | Mapping):
            _too_long(data, self.max_length)
        return super().to_internal_value(data)


class BoundedDictField(serializers.DictField):
    """A DictField of at most ``max_length`` keys, checked before any value is."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, Mapping):
            _too_long(data, self.max_length)
        return super().to_internal_value(data)
