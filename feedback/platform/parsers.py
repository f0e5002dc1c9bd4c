"""The API's JSON body parser: DRF's, strict about what the database and UTF-8 cannot hold.

DRF's parser already refuses NaN and Infinity. This one also turns into the API's usual 4xx JSON
error what would otherwise be a 500 or an HTML page: a body over DATA_UPLOAD_MAX_MEMORY_SIZE (a
413), nesting deeper than ``MAX_DEPTH`` (Python's decoder raises RecursionError on 10,000
levels), and a NUL character or a lone surrogate (``"\\ud800"``) anywhere in a key or a value:
PostgreSQL's text and jsonb cannot store NUL, and a lone surrogate has no UTF-8 encoding, so
either fails deep in a save or while rendering an answer that echoes it. Each such string is
named by its dotted path (``scores.12``, ``recipe.note``) like any other field error.

This module imports nothing but DRF's parsers and exceptions: DRF loads it while defining
``APIView`` itself (``DEFAULT_PARSER_CLASSES``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from rest_framework import exceptions, parsers, renderers
from rest_framework.parsers import BaseParser

# Deeper than any body this API takes (a judgment is 3 levels, a recipe or filter set 2).
MAX_DEPTH = 64
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
    surrogate, and for nesting deeper than MAX_DEPTH; empty when the body is clean.

    Iterative, so a body nested as deep as the decoder allows cannot exhaust the stack here."""
    problems: dict[str, list[str]] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack and len(problems) < MAX_REPORTED:
        path, value = stack.pop()
        name = ".".join(path) or "body"
        if len(path) > MAX_DEPTH:
            problems[name] = [f"Nested deeper than {MAX_DEPTH} levels."]
        elif isinstance(value, str):
            if reason := _string_problem(value):
                problems[name] = [reason]
        elif isinstance(value, dict):
            for key, item in value.items():
                key_path = (*path, _printable(key))
                if isinstance(key, str) and (reason := _string_problem(key)):
                    problems[".".join(key_path)] = [KEY_REASONS[reason]]
                else:
                    stack.append((key_path, item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), item) for i, item in enumerate(value))
    return problems


class JSONParser(BaseParser):
    """``application/json`` bodies, read up to DATA_UPLOAD_MAX_MEMORY_SIZE and checked."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = b"" if stream is None else stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(raw.decode(encoding), parse_constant=_reject_constant)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        except (ValueError, LookupError) as exc:  # bad JSON, bad UTF-8, unknown charset
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
