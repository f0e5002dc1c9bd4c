"""The API's JSON body parser: DRF's, strict about what the database and UTF-8 cannot hold.

DRF's parser already refuses NaN and Infinity. This one also turns into the API's usual 4xx JSON
error what would otherwise be a 500 or an HTML page: a body over DATA_UPLOAD_MAX_MEMORY_SIZE (a
413), nesting deeper than ``MAX_DEPTH`` (Python's decoder raises RecursionError on 10,000
levels), and a NUL character or a lone surrogate (``"\\ud800"``) anywhere in a key or a value:
PostgreSQL's text and jsonb cannot store NUL, and a lone surrogate has no UTF-8 encoding, so
either fails deep in a save or while rendering an answer that echoes it. Each such string is
named by its dotted path (``scores.12``, ``recipe.note``) like any other field error.

More refusals keep a hostile body within the body limit cheap: a list or object longer than
``MAX_ENTRIES`` (no route takes more: a round's ``prompt_ids`` are at most 100,000) is refused by
its length before any entry is looked at, and a body of more than ``MAX_VALUES`` values or
``MAX_CONTAINERS`` lists and objects in all is refused as soon as the walk has counted that
many, so a 3 MB list of a million numbers costs its decoding and no more (the walk over each
entry took seconds and stalled the other requests of the process). And JSON is UTF-8 (RFC
8259): a body declared in another charset is a 415 naming it, never decoded and stored.

This module imports nothing but DRF's parsers and exceptions: DRF loads it while defining
``APIView`` itself (``DEFAULT_PARSER_CLASSES``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.utils.http import parse_header_parameters
from rest_framework import exceptions, parsers, renderers
from rest_framework.parsers import BaseParser

# Deeper than any body this API takes (a judgment is 3 levels, a recipe or filter set 2).
MAX_DEPTH = 64
# Longer than any list or object a route takes, more values (and far more lists and objects)
# than any body holds: each list or object costs the walk a few microseconds, an entry far less.
MAX_ENTRIES = 100_000
MAX_VALUES = 200_000
MAX_CONTAINERS = 10_000
_CONTAINERS = (dict, list)  # exactly: json.loads makes no subclasses
# Enough to show a client what is wrong without echoing a whole hostile body back.
MAX_REPORTED = 20
NUL = "Must not contain NUL characters."
SURROGATE = "Must be valid Unicode (it holds a lone surrogate)."
KEY_REASONS = {
    NUL: "A field name must not contain NUL characters.",
    SURROGATE: "A field name must be valid Unicode (this one holds a lone surrogate).",
}


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "too_large"


def _reject_constant(name: str) -> None:
    raise ValueError(f"Out of range float values are not JSON compliant: {name!r}")


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE
    return None


def _printable(part: object) -> str:
    """A path component that can itself be shown and encoded (its bad characters escaped)."""
    return str(part).replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()


def unstorable_strings(data: Any) -> dict[str, list[str]]:
    """``{dotted.path: [reason]}`` for each string (key or value) holding NUL or a lone
    surrogate, for nesting deeper than MAX_DEPTH, and for a list or object longer than
    MAX_ENTRIES and for a body of more than MAX_VALUES values or MAX_CONTAINERS lists and
    objects; empty when the body is clean.

    Iterative, so a body nested as deep as the decoder allows cannot exhaust the stack here. A
    container's length is checked before its entries; its strings are checked together (one
    join, at C speed) and one by one only when that finds a problem; only containers are
    walked into. The walk stops at MAX_REPORTED problems or past either budget."""
    if type(data) not in _CONTAINERS:
        reason = _string_problem(data) if isinstance(data, str) else None
        return {"body": [reason]} if reason else {}
    problems: dict[str, list[str]] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    values = containers = 0
    while stack and len(problems) < MAX_REPORTED:
        path, value = stack.pop()
        name = ".".join(path) or "body"
        if len(path) > MAX_DEPTH:
            problems[name] = [f"Nested deeper than {MAX_DEPTH} levels."]
            continue
        if len(value) > MAX_ENTRIES:  # reported, and not walked: its entries cost nothing
            problems[name] = [f"At most {MAX_ENTRIES} entries; got {len(value)}."]
            continue
        values += len(value)
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        inner = [(key, item) for key, item in entries if type(item) in _CONTAINERS]
        containers += len(inner)
        if values > MAX_VALUES or containers > MAX_CONTAINERS:
            problems["body"] = [
                f"At most {MAX_VALUES} values, and {MAX_CONTAINERS} lists and objects, in one body."
            ]
            break
        _strings_checked(path, value, problems)
        stack.extend(((*path, _printable(key)), item) for key, item in inner)
    return problems


def _strings_checked(
    path: tuple[str, ...], value: dict[Any, Any] | list[Any], problems: dict[str, list[str]]
) -> None:
    """Add to ``problems`` the unstorable strings among one container's keys and entries."""
    if isinstance(value, dict):
        if not _storable("".join(key for key in value if isinstance(key, str))):
            for key in value:
                if isinstance(key, str) and (reason := _string_problem(key)):
                    problems[".".join((*path, _printable(key)))] = [KEY_REASONS[reason]]
        items: Any = value.values()
    else:
        items = value
    if _storable("".join([item for item in items if type(item) is str])):
        return
    for key, item in value.items() if isinstance(value, dict) else enumerate(value):
        if isinstance(item, str) and (reason := _string_problem(item)):
            problems[".".join((*path, _printable(key)))] = [reason]


def _storable(text: str) -> bool:
    return _string_problem(text) is None


def _charset_refused(media_type: str | None) -> None:
    """JSON is UTF-8 (RFC 8259): a body declared in any other charset is refused, not decoded
    as the client says and stored."""
    _, params = parse_header_parameters(media_type or "")
    charset = params.get("charset", "utf-8").strip().lower()
    if charset not in ("utf-8", "utf8"):
        raise exceptions.UnsupportedMediaType(
            media_type,
            detail=f"JSON must be UTF-8; charset={_printable(charset)[:40]} is not accepted.",
        )


class JSONParser(BaseParser):
    """``application/json`` bodies, read up to DATA_UPLOAD_MAX_MEMORY_SIZE and checked."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        _charset_refused(media_type)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = b"" if stream is None else stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:  # bad JSON, bad UTF-8
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if problems := unstorable_strings(data):
            raise exceptions.ValidationError(problems)
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, with Django's size and field-count refusals as 4xx JSON (Django
    raises them as SuspiciousOperation, which would otherwise become its HTML 400 page)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RequestDataTooBig:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            raise PayloadTooLarge(
                f"The form fields are larger than {limit} bytes (files apart)."
            ) from None
        except TooManyFieldsSent:
            raise exceptions.ParseError(
                f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields."
            ) from None
