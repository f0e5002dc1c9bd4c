"""Strict reading of a client's JSON: what the answer validators share (``annotation.rubrics``
for rankings and scores, ``annotation.judgments`` for the rest of a judgment).

Strict on purpose: a score is the JSON integer 5, not ``"5"``, ``5.0`` or ``true``, because a
dataset silently built from coerced values is worse than a clear 400.
"""

from __future__ import annotations

import math

from feedback.platform.errors import DomainError, errors_detail

# A dotted field path (``scores.12.helpful``) → its reasons; empty when the body is valid.
Errors = dict[str, list[str]]


def is_strict_int(value: object) -> bool:
    # bool is a subclass of int in Python; JSON true is not a score.
    return isinstance(value, int) and not isinstance(value, bool)


def described(value: object) -> str:
    """What a client sent, in words for an error message ("a string", "a boolean", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "a non-finite number"
        return "a float" if value.is_integer() else "a number with a fraction part"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown(key: object) -> str:
    """A client's key as it can appear in an error path: lone surrogates (no UTF-8 encoding)
    escaped, so rendering the error cannot fail."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def errors_raise(errors: Errors) -> None:
    """The 400 naming the bad fields (the first ``MAX_FIELDS`` of them), when there is one."""
    if errors:
        raise DomainError(errors_detail(errors), fields=errors)
