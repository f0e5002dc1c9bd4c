"""Export filters: which judgments (or demonstrations) an export reads and how a task's judgments
combine, parsed from a query string or a JSON dict and checked against the database (rounds,
policies, rubrics, flags and axes that exist), so that a bad filter is a field error before the
first row is read."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError

from ..models import Round, Rubric

CONSENSUS_RULES = ("none", "bradley_terry")
WEIGHTINGS = ("equal", "trust")
# Trust of an annotator the quality module has no tally for: "not known yet".
UNKNOWN_TRUST = 0.5


@dataclass(frozen=True)
class ExportFilters:
    """Which judgments (or demonstrations) an export reads, and how a task's judgments combine.
    The defaults read everything, each judgment on its own.

    ``rounds``: ``Round.number``s. ``policies``: PolicyVersion names; tasks with at least one
    completion from one of them. ``rubric``: a rubric label, ``"3H@1"``. ``min_agreement``: tasks
    whose ``quality.task_agreement`` among the judgments the other filters keep is at least
    this; a task left with one judgment (or nothing comparable) has no agreement and is dropped.
    ``min_trust``: judgments of annotators whose ``quality.annotator_trust_scores`` (over
    ``rounds``) is at least this; one the quality module has no tally for counts as 0.5.
    ``flags``: judgments that raised any of these flag keys; ``exclude_flags``: judgments that
    raised none of these. ``axis``: pairs cut from that axis's
    scores instead of the ranking (ultrafeedback: only that axis). ``since`` (inclusive) and
    ``until`` (exclusive): the judgment's (or demonstration's) ``created_at``. ``consensus``:
    "none" (every judgment's own pairs) or "bradley_terry" (one consensus per task).
    ``weighting``: "equal", or "trust" (each annotator weighs their trust in the consensus).
    ``include_none_acceptable``: the formats that give an ordering (the pair formats and
    ultrafeedback) leave out what says no answer is acceptable (a judgment, or under a
    consensus a task: ``consensus.consensus_none_acceptable``) unless this is true; KTO
    always reads them (every answer undesirable), the raw judgments show the field.
    """

    rounds: tuple[int, ...] = ()
    policies: tuple[str, ...] = ()
    rubric: str = ""
    min_agreement: float | None = None
    min_trust: float | None = None
    flags: tuple[str, ...] = ()
    exclude_flags: tuple[str, ...] = ()
    axis: str = ""
    since: datetime | None = None
    until: datetime | None = None
    consensus: str = "none"
    weighting: str = "equal"
    include_none_acceptable: bool = False

    def __post_init__(self) -> None:
        # Callers may pass lists; tuples keep the dataclass hashable.
        for name in ("rounds", "policies", "flags", "exclude_flags"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_params(self) -> dict[str, Any]:
        """The filters that differ from the defaults, JSON-safe, as ``export_filters_parse``
        reads them back (for a job's or a snapshot's record)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value == spec.default:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


FILTER_NAMES = frozenset(spec.name for spec in fields(ExportFilters))
# The repeatable filters also answer to their singular names (``?round=1&round=2``).
_ALIASES = {
    "round": "rounds",
    "policy": "policies",
    "flag": "flags",
    "exclude_flag": "exclude_flags",
}
_REPEATED = frozenset(_ALIASES.values())
_LABEL = re.compile(r"(?P<name>.+)@(?P<version>\d+)")


def _raw_values(
    params: Mapping[str, Any],
) -> tuple[dict[str, tuple[str, list[Any]]], dict[str, list[str]]]:
    """{field: (the name the caller used, [values])}, and errors for unknown keys of a plain
    dict. A query string may repeat a parameter or comma-separate its values; other query
    parameters (``format``, ``pseudonymous``) are not filters and are left alone."""
    raw: dict[str, tuple[str, list[Any]]] = {}
    errors: dict[str, list[str]] = {}
    query = isinstance(params, MultiValueDict)
    for key in params:
        name = _ALIASES.get(key, key)
        if name not in FILTER_NAMES:
            if not query:
                errors[key] = [f"Unknown filter; allowed: {', '.join(sorted(FILTER_NAMES))}."]
            continue
        values = params.getlist(key) if query else params[key]
        values = list(values) if isinstance(values, list | tuple) else [values]
        split: list[Any] = []
        for value in values:
            if isinstance(value, str) and name in _REPEATED:
                split.extend(part.strip() for part in value.split(",") if part.strip())
            elif value is not None and value != "":
                split.append(value.strip() if isinstance(value, str) else value)
        if split:
            previous = raw.get(name, (key, []))[1]
            raw[name] = (key, previous + split)
    return raw, errors


@dataclass
class _Parsing:
    """A parse under way: the raw values by field (with the name the caller used), the values
    checked so far, and the errors under the caller's names."""

    raw: dict[str, tuple[str, list[Any]]]
    errors: dict[str, list[str]]
    values: dict[str, Any] = field(default_factory=dict)
    one: dict[str, Any] = field(init=False)  # the last value of each field given

    def __post_init__(self) -> None:
        for name, (_, items) in self.raw.items():
            if name not in _REPEATED and len(items) > 1:
                self.bad(name, "Give one value.")
        self.one = {name: items[-1] for name, (_, items) in self.raw.items()}

    def items(self, name: str) -> list[Any]:
        return self.raw.get(name, ("", []))[1]

    def bad(self, name: str, reason: str) -> None:
        self.errors.setdefault(self.raw[name][0] if name in self.raw else name, []).append(reason)


def _rounds_parse(parsing: _Parsing) -> None:
    rounds: list[int] = []
    items = parsing.items("rounds")
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            rounds.append(item)
        elif isinstance(item, str) and item.isascii() and item.isdigit():
            rounds.append(int(item))
        else:
            parsing.bad("rounds", f"{item!r} is not a round number.")
    if rounds and len(rounds) == len(items):
        known = set(Round.objects.filter(number__in=rounds).values_list("number", flat=True))
        missing = sorted(set(rounds) - known)
        if missing:
            parsing.bad("rounds", f"No round number {missing[0]}.")
        parsing.values["rounds"] = tuple(dict.fromkeys(rounds))


def _policies_parse(parsing: _Parsing) -> None:
    policies = [str(item) for item in parsing.items("policies")]
    if not policies:
        return
    known = set(PolicyVersion.objects.filter(name__in=policies).values_list("name", flat=True))
    for name in policies:
        if name not in known:
            parsing.bad("policies", f"No policy version named {name!r}.")
    parsing.values["policies"] = tuple(dict.fromkeys(policies))


def _rubric_parse(parsing: _Parsing) -> None:
    """The rubric, then the flags and the axis, which must be that rubric's (every rubric's
    when none is named)."""
    rubrics = list(Rubric.objects.order_by("name", "version"))
    if "rubric" in parsing.one:
        label = str(parsing.one["rubric"])
        if _LABEL.fullmatch(label) is None:
            parsing.bad("rubric", f"{label!r} is not a rubric label like '3H@1'.")
        elif not any(r.label == label for r in rubrics):
            parsing.bad("rubric", f"No rubric {label}.")
        else:
            parsing.values["rubric"] = label
            rubrics = [r for r in rubrics if r.label == label]
    axes = list(dict.fromkeys(key for r in rubrics for key in r.axis_keys))
    flags = list(dict.fromkeys(key for r in rubrics for key in r.flag_keys))
    for name in ("flags", "exclude_flags"):
        for item in parsing.items(name):
            if item not in flags:
                parsing.bad(name, f"Unknown flag {item!r}; the rubrics have: {', '.join(flags)}.")
        if name in parsing.raw:
            parsing.values[name] = tuple(dict.fromkeys(str(item) for item in parsing.items(name)))
    if "axis" in parsing.one:
        axis = parsing.one["axis"]
        if axis not in axes:
            parsing.bad("axis", f"Unknown axis {axis!r}; the rubrics have: {', '.join(axes)}.")
        parsing.values["axis"] = str(axis)


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0 <= number <= 1 else None


def _moment(value: Any) -> datetime | None:
    """An aware datetime from an ISO date or datetime (a date is its midnight, a naive time is
    in the project's time zone)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _bounds_parse(parsing: _Parsing) -> None:
    """The thresholds (fractions) and the dates."""
    one, values = parsing.one, parsing.values
    for name in ("min_agreement", "min_trust"):
        if name in one:
            values[name] = _fraction(one[name])
            if values[name] is None:
                parsing.bad(name, f"Must be a number from 0 to 1, got {one[name]!r}.")
    for name in ("since", "until"):
        if name in one:
            values[name] = _moment(one[name])
            if values[name] is None:
                parsing.bad(name, f"{one[name]!r} is not an ISO date or datetime.")
    if values.get("since") and values.get("until") and values["since"] >= values["until"]:
        parsing.bad("until", "Must be later than since.")


def _rules_parse(parsing: _Parsing) -> None:
    """How a task's judgments combine, and how much each annotator weighs."""
    for name, allowed in (("consensus", CONSENSUS_RULES), ("weighting", WEIGHTINGS)):
        if name in parsing.one:
            if parsing.one[name] not in allowed:
                parsing.bad(name, f"Must be one of: {', '.join(allowed)}.")
            parsing.values[name] = str(parsing.one[name])
    values = parsing.values
    if values.get("weighting") == "trust" and values.get("consensus", "none") == "none":
        why = "Trust weighting applies to a consensus: set consensus=bradley_terry."
        parsing.bad("weighting", why)


def _outcome_parse(parsing: _Parsing) -> None:
    """Whether the ordering formats read what says no answer is acceptable: a JSON boolean, or
    ``true`` / ``false`` in a query string."""
    name = "include_none_acceptable"
    if name in parsing.one:
        value = parsing.one[name]
        if isinstance(value, str):
            value = {"true": True, "false": False}.get(value.lower(), value)
        if not isinstance(value, bool):
            parsing.bad(name, f"Must be true or false, got {value!r}.")
        parsing.values[name] = value is True


def export_filters_parse(params: Mapping[str, Any]) -> ExportFilters:
    """Filters from a query string (a ``QueryDict``: repeated or comma-separated values) or a
    plain JSON dict (lists, or single values); raises ``DomainError`` naming every bad field."""
    parsing = _Parsing(*_raw_values(params))
    for parse in (_rounds_parse, _policies_parse, _rubric_parse, _bounds_parse, _rules_parse,
                  _outcome_parse):  # fmt: skip
        parse(parsing)
    if parsing.errors:
        raise DomainError(
            "Bad export filters: "
            + "; ".join(f"{k}: {' '.join(v)}" for k, v in parsing.errors.items()),
            fields=parsing.errors,
        )
    return ExportFilters(**parsing.values)
