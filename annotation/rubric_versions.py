"""New rubric versions: an admin changes the axes, their scale labels, the guidelines, the flags
or the strength labels, and a new version of the rubric is made; the old ones stay as they were.

A rubric is data that every judgment made under it is read against, so a version is never
edited: a round pins the version it was opened with (``Round.rubric``), its judgments are
checked against that version, and exports, snapshots and the dashboard name the version of every
row. ``rubric_version_create`` checks a definition as strictly as an answer is checked (the
same field paths in its errors) and stores it as the next version of its name.
"""

from __future__ import annotations

import math
import re
from typing import Any

from django.db import IntegrityError, transaction

from feedback.platform.errors import DomainError
from feedback.platform.strict import NUL, shown

from .models import Rubric
from .strict_json import Errors, described, errors_raise, is_strict_int

KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
KEY_RULE = "a lowercase letter, then up to 39 lowercase letters, digits or underscores"
MAX_AXES = 8
MAX_SCALE_POINTS = 11  # 0-10 or 1-11 at most: a scale longer than that is not read reliably
MAX_FLAGS = 20
MAX_STRENGTHS = 8
MAX_SHORT = 200  # a label or a question
MAX_TEXT = 20_000  # guidelines


def _text(value: object, path: str, errors: Errors, *, limit: int, required: bool = True) -> str:
    if not isinstance(value, str):
        errors[path] = [f"Must be a string, got {described(value)}."]
        return ""
    if "\x00" in value:
        errors[path] = [NUL]
    elif required and not value.strip():
        errors[path] = ["Must not be empty."]
    elif len(value) > limit:
        errors[path] = [f"At most {limit} characters, got {len(value)}."]
    return value.strip() if limit == MAX_SHORT else value


def _key(value: object, path: str, seen: set[str], errors: Errors) -> str:
    if not isinstance(value, str) or not KEY.match(value):
        errors[path] = [f"Must be {KEY_RULE}."]
        return ""
    if value in seen:
        errors[path] = [f"{value!r} is used twice; keys must be unique."]
    seen.add(value)
    return value


def _objects(
    value: object, path: str, errors: Errors, *, least: int, most: int
) -> list[tuple[int, dict[str, Any]]]:
    """The (index, object) entries of a list of ``least`` to ``most`` objects; what is wrong
    goes to ``errors``."""
    if not isinstance(value, list):
        errors[path] = [f"Must be a list, got {described(value)}."]
        return []
    if not least <= len(value) <= most:
        errors[path] = [f"Must have {least} to {most} entries, got {len(value)}."]
        return []
    good = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            good.append((i, entry))
        else:
            errors[f"{path}.{i}"] = [f"Must be an object, got {described(entry)}."]
    return good


def _unknown(entry: dict[str, Any], allowed: set[str], path: str, errors: Errors) -> None:
    for name in entry:
        if name not in allowed:
            errors[f"{path}.{shown(name)}" if path else shown(name)] = [
                f"Unknown field; allowed: {', '.join(sorted(allowed))}."
            ]


def _axis(i: int, entry: dict[str, Any], seen: set[str], errors: Errors) -> dict[str, Any]:
    path = f"axes.{i}"
    _unknown(entry, {"key", "label", "question", "min", "max", "guidelines"}, path, errors)
    low, high = entry.get("min"), entry.get("max")
    for name, value in (("min", low), ("max", high)):
        if not is_strict_int(value):
            errors[f"{path}.{name}"] = [f"Must be an integer, got {described(value)}."]
    axis = {
        "key": _key(entry.get("key"), f"{path}.key", seen, errors),
        "label": _text(entry.get("label"), f"{path}.label", errors, limit=MAX_SHORT),
        "question": _text(entry.get("question"), f"{path}.question", errors, limit=MAX_SHORT),
        "min": low,
        "max": high,
        "guidelines": {},
    }
    if not (is_strict_int(low) and is_strict_int(high)):
        return axis
    if low < 0 or not 2 <= high - low + 1 <= MAX_SCALE_POINTS:
        errors[f"{path}.max"] = [
            f"The scale must run from min (0 or more) over 2 to {MAX_SCALE_POINTS} points; "
            f"got {low} to {high}."
        ]
        return axis
    labels = entry.get("guidelines")
    if not isinstance(labels, dict):
        errors[f"{path}.guidelines"] = [
            f"Must be an object giving what each score means, got {described(labels)}."
        ]
        return axis
    expected = [str(score) for score in range(low, high + 1)]
    for score in labels:
        if score not in expected:
            errors[f"{path}.guidelines.{shown(score)}"] = [
                f"Not a score of this scale ({low} to {high})."
            ]
    for score in expected:
        label_path = f"{path}.guidelines.{score}"
        if score not in labels:
            errors[label_path] = ["Missing: every score of the scale needs its description."]
        else:
            axis["guidelines"][score] = _text(labels[score], label_path, errors, limit=MAX_TEXT)
    return axis


def _strengths(value: object, errors: Errors) -> list[dict[str, Any]]:
    """Strongest first: the margins a pair gets, each at most the one before."""
    seen: set[str] = set()
    clean: list[dict[str, Any]] = []
    for i, entry in _objects(value, "strength_labels", errors, least=1, most=MAX_STRENGTHS):
        path = f"strength_labels.{i}"
        _unknown(entry, {"key", "label", "margin"}, path, errors)
        margin = entry.get("margin")
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            errors[f"{path}.margin"] = [f"Must be a number, got {described(margin)}."]
            margin = None
        elif not math.isfinite(margin) or not 0 <= margin <= 10:
            errors[f"{path}.margin"] = [f"Must be from 0 to 10, got {margin}."]
            margin = None
        elif clean and clean[-1]["margin"] is not None and margin > clean[-1]["margin"]:
            errors[f"{path}.margin"] = [
                f"Strongest first: {margin} is more than the margin before it "
                f"({clean[-1]['margin']})."
            ]
        clean.append(
            {
                "key": _key(entry.get("key"), f"{path}.key", seen, errors),
                "label": _text(entry.get("label"), f"{path}.label", errors, limit=MAX_SHORT),
                "margin": margin,
            }
        )
    return clean


def rubric_definition_validate(body: object) -> dict[str, Any]:
    """A rubric's definition, checked field by field; a 400 naming every bad field."""
    if not isinstance(body, dict):
        raise DomainError(f"The body must be a JSON object, got {described(body)}.")
    errors: Errors = {}
    _unknown(body, {"name", "axes", "flags", "strength_labels", "guidelines"}, "", errors)
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        errors["name"] = [
            "Must be 1 to 100 letters, digits, spaces, dots, dashes or underscores, "
            "starting with a letter or digit."
        ]
    axis_keys: set[str] = set()
    axes = [
        _axis(i, entry, axis_keys, errors)
        for i, entry in _objects(body.get("axes"), "axes", errors, least=1, most=MAX_AXES)
    ]
    flag_keys: set[str] = set()
    flags = []
    for i, entry in _objects(body.get("flags", []), "flags", errors, least=0, most=MAX_FLAGS):
        _unknown(entry, {"key", "label"}, f"flags.{i}", errors)
        flags.append(
            {
                "key": _key(entry.get("key"), f"flags.{i}.key", flag_keys, errors),
                "label": _text(entry.get("label"), f"flags.{i}.label", errors, limit=MAX_SHORT),
            }
        )
    strengths = _strengths(body.get("strength_labels"), errors)
    guidelines = _text(
        body.get("guidelines", ""), "guidelines", errors, limit=MAX_TEXT, required=False
    )
    errors_raise(errors)
    return {
        "name": name,
        "axes": axes,
        "flags": flags,
        "strength_labels": strengths,
        "guidelines": guidelines,
    }


def rubric_version_create(*, body: object) -> Rubric:
    """Store ``body`` as the next version of its rubric name (version 1 of a new name).

    Two admins saving at once both read the same newest version; the unique (name, version)
    constraint refuses the second insert, which then reads again and takes the next number.
    """
    definition = rubric_definition_validate(body)
    for _attempt in range(5):
        newest = (
            Rubric.objects.filter(name=definition["name"])
            .order_by("-version")
            .values_list("version", flat=True)
            .first()
        )
        try:
            with transaction.atomic():
                return Rubric.objects.create(version=(newest or 0) + 1, **definition)
        except IntegrityError:
            continue
    raise DomainError(
        "Other versions of this rubric were being saved at the same time; try again.",
        code="conflict",
        status=409,
    )
