"""Dataset exports, streamed row by row so memory stays flat however large the table grows.

``FORMATS`` holds every format: TRL preference pairs with an explicit prompt (``trl``, the
conversational format ``DPOTrainer`` and ``RewardTrainer`` load directly) or an implicit one
(``trl_implicit``), HH-RLHF transcripts, UltraFeedback-like per-axis ratings, KTO's unpaired
examples, SFT messages from demonstrations, and the raw judgments. Every row carries its provenance
(task, round, policy versions, rubric version, judgment) and a pseudonymous annotator id: a keyed
hash, stable across exports with the same key. ``ExportFilters`` says which judgments are read.

Column types never change from one row to the next, so that ``datasets.load_dataset("json")``,
which fixes every column's type from the file's first 10 MB, loads any file without a cast
error: no column is null in some rows and a value in others. Absent text is "", an absent id is 0
(ids start at 1) and an absent score is 0 (scales start at 1). Per-axis scores are structs with
the same fields in every row: the axes of every rubric the exported judgments used, looked up
before the first row. Flags are a struct of booleans, one per rubric flag, rather than a list of
keys, because a list that stays empty through the first 10 MB (flags are rare) would be typed as a
list of nulls and the first flag after it would fail the load. The Parquet writer
(``annotation.export_files``) uses each format's explicit schema, ``ExportFormat.schema``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    TextField,
)
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError

from .consensus import task_consensus, weighted_mean_scores
from .export_batches import (
    ABSENT,
    EXPLICIT,
    IMPLICIT,
    TRANSCRIPT,
    PairBatch,
    PairHead,
    RowBatch,
    json_encode,
    pair_batches,
    pair_row,
    row_batches,
)
from .models import ComparisonTask, Demonstration, Judgment, Round, Rubric, TaskCompletion
from .pairs import PairCut, axis_width, judgment_pairs, score_pairs

if TYPE_CHECKING:
    import pyarrow as pa

AnyJudgment = TypeVar("AnyJudgment", "Judgment", "JudgmentRecord")

CHUNK_SIZE = 250
FILE_FORMATS = ("jsonl", "parquet")
CONSENSUS_RULES = ("none", "bradley_terry")
WEIGHTINGS = ("equal", "trust")
# Trust of an annotator the quality module has no tally for: "not known yet".
UNKNOWN_TRUST = 0.5


def annotator_pseudonym(user_id: int) -> str:
    digest = hmac.new(
        settings.PSEUDONYM_KEY.encode(), f"annotator:{user_id}".encode(), hashlib.sha256
    )
    return "ann_" + digest.hexdigest()[:16]


# --- Filters ------------------------------------------------------------------------------------


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


# The repeatable filters also answer to their singular names (``?round=1&round=2``).
_ALIASES = {
    "round": "rounds",
    "policy": "policies",
    "flag": "flags",
    "exclude_flag": "exclude_flags",
}
_REPEATED = frozenset(_ALIASES.values())
_NAMES = frozenset(spec.name for spec in fields(ExportFilters))
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
        if name not in _NAMES:
            if not query:
                errors[key] = [f"Unknown filter; allowed: {', '.join(sorted(_NAMES))}."]
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


def export_filters_parse(params: Mapping[str, Any]) -> ExportFilters:
    """Filters from a query string (a ``QueryDict``: repeated or comma-separated values) or a
    plain JSON dict (lists, or single values); raises ``DomainError`` naming every bad field."""
    raw, errors = _raw_values(params)
    values: dict[str, Any] = {}

    def bad(name: str, reason: str) -> None:
        errors.setdefault(raw[name][0] if name in raw else name, []).append(reason)

    for name, (_, items) in raw.items():
        if name not in _REPEATED and len(items) > 1:
            bad(name, "Give one value.")
    one = {name: items[-1] for name, (_, items) in raw.items()}

    rounds: list[int] = []
    round_items = raw.get("rounds", ("", []))[1]
    for item in round_items:
        if isinstance(item, int) and not isinstance(item, bool):
            rounds.append(item)
        elif isinstance(item, str) and item.isascii() and item.isdigit():
            rounds.append(int(item))
        else:
            bad("rounds", f"{item!r} is not a round number.")
    if rounds and len(rounds) == len(round_items):
        known = set(Round.objects.filter(number__in=rounds).values_list("number", flat=True))
        missing = sorted(set(rounds) - known)
        if missing:
            bad("rounds", f"No round number {missing[0]}.")
        values["rounds"] = tuple(dict.fromkeys(rounds))

    policies = [str(item) for item in raw.get("policies", ("", []))[1]]
    if policies:
        known_names = set(
            PolicyVersion.objects.filter(name__in=policies).values_list("name", flat=True)
        )
        for name in policies:
            if name not in known_names:
                bad("policies", f"No policy version named {name!r}.")
        values["policies"] = tuple(dict.fromkeys(policies))

    rubrics = list(Rubric.objects.order_by("name", "version"))
    if "rubric" in one:
        label = str(one["rubric"])
        match = _LABEL.fullmatch(label)
        if match is None:
            bad("rubric", f"{label!r} is not a rubric label like '3H@1'.")
        elif not any(r.label == label for r in rubrics):
            bad("rubric", f"No rubric {label}.")
        else:
            values["rubric"] = label
            rubrics = [r for r in rubrics if r.label == label]
    axes = list(dict.fromkeys(key for r in rubrics for key in r.axis_keys))
    flags = list(dict.fromkeys(key for r in rubrics for key in r.flag_keys))
    for name in ("flags", "exclude_flags"):
        for item in raw.get(name, ("", []))[1]:
            if item not in flags:
                bad(name, f"Unknown flag {item!r}; the rubrics have: {', '.join(flags)}.")
        if name in raw:
            values[name] = tuple(dict.fromkeys(str(item) for item in raw[name][1]))
    if "axis" in one:
        if one["axis"] not in axes:
            bad("axis", f"Unknown axis {one['axis']!r}; the rubrics have: {', '.join(axes)}.")
        values["axis"] = str(one["axis"])

    for name in ("min_agreement", "min_trust"):
        if name in one:
            number = _fraction(one[name])
            if number is None:
                bad(name, f"Must be a number from 0 to 1, got {one[name]!r}.")
            values[name] = number
    for name in ("since", "until"):
        if name in one:
            moment = _moment(one[name])
            if moment is None:
                bad(name, f"{one[name]!r} is not an ISO date or datetime.")
            values[name] = moment
    if values.get("since") and values.get("until") and values["since"] >= values["until"]:
        bad("until", "Must be later than since.")

    for name, allowed in (("consensus", CONSENSUS_RULES), ("weighting", WEIGHTINGS)):
        if name in one:
            if one[name] not in allowed:
                bad(name, f"Must be one of: {', '.join(allowed)}.")
            values[name] = str(one[name])
    if values.get("weighting") == "trust" and values.get("consensus", "none") == "none":
        bad("weighting", "Trust weighting applies to a consensus: set consensus=bradley_terry.")

    if errors:
        raise DomainError(
            "Bad export filters: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()),
            fields=errors,
        )
    return ExportFilters(**values)


# --- What an export reads -----------------------------------------------------------------------


def judgments_selected(*, filters: ExportFilters) -> QuerySet[Judgment]:
    """The judgments an export reads: the filters the database applies (rounds, policies,
    rubric, dates). Flags, trust and agreement are checked on each judgment as it streams by,
    which works the same on every database and costs nothing extra for the full export."""
    judgments = Judgment.objects.all()
    if filters.rounds:
        judgments = judgments.filter(task__round__number__in=filters.rounds)
    if filters.policies:
        from_policy = TaskCompletion.objects.filter(
            task_id=OuterRef("task_id"), completion__policy_version__name__in=filters.policies
        )
        judgments = judgments.filter(Exists(from_policy))
    if filters.rubric:
        name, version = filters.rubric.rsplit("@", 1)
        judgments = judgments.filter(rubric__name=name, rubric__version=int(version))
    if filters.since:
        judgments = judgments.filter(created_at__gte=filters.since)
    if filters.until:
        judgments = judgments.filter(created_at__lt=filters.until)
    return judgments


# Exports read judgments a task at a time (``EXPORT_ORDER``): a consensus needs a task's judgments
# together, and every format reads and encodes a task's prompt and completions once for all its
# judgments rather than once for each (a task judged three times was read three times in
# judgment order). Within a task, judgments come in the order they were made.
EXPORT_ORDER = ("task_id", "created_at", "id")


def judgments_for_export(
    *, rounds: list[int] | None = None, filters: ExportFilters | None = None
) -> Iterator[Judgment]:
    """Judgments with their task, prompt and completions, fetched a chunk at a time, a task's
    together (``EXPORT_ORDER``). ``rounds``, when given, replaces ``filters.rounds``."""
    filters = filters or ExportFilters()
    if rounds:
        filters = replace(filters, rounds=tuple(rounds))
    judgments = (
        judgments_selected(filters=filters)
        .select_related("task__prompt", "task__round__policy_version", "rubric")
        .order_by(*EXPORT_ORDER)
    )
    slots = TaskCompletion.objects.select_related("completion__policy_version")
    return judgments.prefetch_related(Prefetch("task__slots", queryset=slots)).iterator(
        chunk_size=CHUNK_SIZE
    )


# What the row functions read: plain records rather than model instances. Building a dozen model
# instances per judgment (task, prompt, round, slots, completions, policies) was nine tenths of an
# export's time; the records are read with ``values_list``, a task's once per chunk.


@dataclass(frozen=True, slots=True)
class SlotRecord:
    completion_id: int
    position: int
    text: str
    policy: str  # the completion's PolicyVersion name


@dataclass(frozen=True, slots=True)
class TaskRecord:
    pk: int
    messages: list[dict[str, str]]  # the prompt
    round: int  # Round.number
    round_policy: str  # the round's serving policy; "" for imported completions
    gold: bool
    slots: tuple[SlotRecord, ...]  # in shown order
    completions: dict[int, SlotRecord]  # the same, by completion id


@dataclass(frozen=True, slots=True)
class JudgmentRecord:
    pk: str
    assignment_id: str
    task: TaskRecord
    annotator_id: int
    rubric: Rubric
    ranking: list[list[int]]
    scores: dict[str, dict[str, int]]
    strength: str
    flags: list[str]
    rationale: str
    time_spent_ms: int
    created_at: datetime | None  # None unless read with ``times``

    @property
    def task_id(self) -> int:
        return self.task.pk


def _task_record(
    pk: int, messages: Any, number: int, policy: str | None, gold: bool, slots: list[SlotRecord]
) -> TaskRecord:
    ordered = tuple(sorted(slots, key=lambda slot: slot.position))
    return TaskRecord(
        pk, messages, number, policy or "", gold, ordered, {s.completion_id: s for s in ordered}
    )


def _task_stream(judgments: QuerySet[Judgment]) -> Iterator[TaskRecord]:
    """The tasks of ``judgments`` in id order, each with its prompt and completions: two
    streamed queries (tasks, and their slots in task order) merged as they go. Reading a chunk
    of tasks by id after each chunk of judgments cost two queries (and a long IN list) per
    chunk, a tenth of an export's time."""
    task_ids = judgments.values("task_id")
    slot_rows = (
        TaskCompletion.objects.filter(task_id__in=task_ids)
        .order_by("task_id", "position")
        .values_list("task_id", "completion_id", "position", "completion__text",
                     "completion__policy_version__name")
        .iterator(chunk_size=4 * CHUNK_SIZE)
    )  # fmt: skip
    task_rows = (
        ComparisonTask.objects.filter(pk__in=task_ids)
        .order_by("pk")
        .annotate(
            gold=ExpressionWrapper(Q(gold_ranking__isnull=False), BooleanField()),
            messages=_text("prompt__messages"),
        )
        .values_list("pk", "messages", "round__number", "round__policy_version__name", "gold")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    slots_by_task = itertools.groupby(slot_rows, key=lambda row: row[0])
    slot_task, slot_group = next(slots_by_task, (None, iter(())))
    for pk, messages, *rest in task_rows:
        slots = []
        if slot_task == pk:
            slots = [SlotRecord(*slot) for _, *slot in slot_group]
            slot_task, slot_group = next(slots_by_task, (None, iter(())))
        yield _task_record(pk, _json_decode(messages), *rest, slots)


# Django's JSONField decodes each value through a chain of Python calls (its converters); an
# export reads a few JSON values per judgment, hundreds of thousands of them, so it reads them
# as text and decodes them here: that was half of the time spent reading judgments. The text
# is the database's own serialisation, with no whitespace around it, so ``raw_decode`` (which
# skips ``decode``'s whitespace checks) reads it whole.
_raw_decode = json.JSONDecoder().raw_decode


def _json_decode(text: str) -> Any:
    return _raw_decode(text)[0]


def _text(name: str) -> Cast:
    return Cast(name, TextField())


JUDGMENT_COLUMNS = (
    "id", "assignment_id", "task_id", "annotator_id", "rubric_id", "ranking_text", "scores_text",
    "strength", "flags_text", "rationale", "time_spent_ms",
)  # fmt: skip


def judgment_records(*, filters: ExportFilters, times: bool = True) -> Iterator[JudgmentRecord]:
    """``judgments_for_export`` as records, streamed with their tasks (``_task_stream``).
    Without ``times`` a record's ``created_at`` is None: Django reads each timestamp through a
    Python parser, a tenth of the read, and only the raw judgments format shows it."""
    selected = judgments_selected(filters=filters)
    rows = (
        selected.order_by(*EXPORT_ORDER)
        .annotate(
            ranking_text=_text("ranking"), scores_text=_text("scores"), flags_text=_text("flags")
        )
        .values_list(*JUDGMENT_COLUMNS, *(["created_at"] if times else []))
        .iterator(chunk_size=CHUNK_SIZE)
    )
    rubrics = {rubric.pk: rubric for rubric in Rubric.objects.all()}
    tasks = _task_stream(selected)
    task = next(tasks, None)
    for row in rows:
        while task is not None and task.pk < row[2]:  # both come in task id order
            task = next(tasks, None)
        if task is None or task.pk != row[2]:
            continue  # its task was deleted while the export ran
        yield JudgmentRecord(
            str(row[0]), str(row[1]), task, row[3], rubrics[row[4]], _json_decode(row[5]),
            _json_decode(row[6]), row[7], _json_decode(row[8]), row[9], row[10],
            row[11] if times else None,
        )  # fmt: skip


def _record_of(judgment: Judgment | JudgmentRecord) -> JudgmentRecord:
    """A judgment from ``judgments_for_export`` as a record (earlier callers pass those)."""
    if isinstance(judgment, JudgmentRecord):
        return judgment
    task, round_ = judgment.task, judgment.task.round
    slots = [
        SlotRecord(s.completion_id, s.position, s.completion.text, s.completion.policy_version.name)
        for s in task.slots.all()
    ]
    policy = round_.policy_version.name if round_.policy_version_id else ""
    return JudgmentRecord(
        str(judgment.pk), str(judgment.assignment_id),
        _task_record(task.pk, task.prompt.messages, round_.number, policy, task.is_gold, slots),
        judgment.annotator_id, judgment.rubric, judgment.ranking, judgment.scores,
        judgment.strength, judgment.flags, judgment.rationale, judgment.time_spent_ms,
        judgment.created_at,
    )  # fmt: skip


def _records(judgments: Iterable[Judgment | JudgmentRecord]) -> Iterator[JudgmentRecord]:
    return (_record_of(judgment) for judgment in judgments)


def demonstrations_selected(*, filters: ExportFilters) -> QuerySet[Demonstration]:
    """Demonstrations of prompts in ``filters.rounds`` (every prompt if none), by date."""
    demonstrations = Demonstration.objects.all()
    if filters.rounds:
        in_rounds = ComparisonTask.objects.filter(
            prompt_id=OuterRef("prompt_id"), round__number__in=filters.rounds
        )
        demonstrations = demonstrations.filter(Exists(in_rounds))
    if filters.since:
        demonstrations = demonstrations.filter(created_at__gte=filters.since)
    if filters.until:
        demonstrations = demonstrations.filter(created_at__lt=filters.until)
    return demonstrations


# An annotator's weight in a consensus: equal by default, trust with ``weighting="trust"``.
Weights = Callable[[int], float]
# A format's rows, and its rows in batches, from what it reads (judgments or demonstrations).
RowsOf = Callable[[Iterable[Any], "ExportContext"], Iterator[dict[str, Any]]]
BatchesOf = Callable[[Iterable[Any], "ExportContext"], Iterator["PairBatch | RowBatch"]]


def _equal(annotator_id: int) -> float:
    return 1.0


@dataclass(frozen=True)
class ExportContext:
    """What every row of one export shares, settled before the first row: the filters, the
    struct fields (every axis and flag of the rubrics read), how annotators are named, and
    their trust (only looked up when a filter needs it)."""

    filters: ExportFilters
    axes: tuple[str, ...]
    flags: tuple[str, ...]
    annotator: Callable[[int], str]
    trust: Mapping[int, float] = field(default_factory=dict)
    weights: Weights = _equal

    def score_struct(self, scores: Mapping[str, int]) -> dict[str, int]:
        return {axis: scores.get(axis, ABSENT) for axis in self.axes}

    def flag_struct(self, raised: Sequence[str]) -> dict[str, bool]:
        return {flag: flag in raised for flag in self.flags}


def _namer(pseudonymous: bool) -> Callable[[int], str]:
    if not pseudonymous:
        usernames = dict(get_user_model().objects.values_list("id", "username"))
        return lambda user_id: usernames.get(user_id, "")
    cache: dict[int, str] = {}

    def pseudonym(user_id: int) -> str:
        if user_id not in cache:
            cache[user_id] = annotator_pseudonym(user_id)
        return cache[user_id]

    return pseudonym


def export_context(
    *, filters: ExportFilters, pseudonymous: bool = True, rubrics: Iterable[Rubric] | None = None
) -> ExportContext:
    """The context of an export: struct fields from the rubrics of the judgments it reads (from
    every rubric when it reads none, so that an empty export still has a schema)."""
    if rubrics is None:
        used = judgments_selected(filters=filters).filter(rubric_id=OuterRef("pk"))
        rubrics = list(Rubric.objects.filter(Exists(used)).order_by("name", "version"))
        rubrics = rubrics or list(Rubric.objects.order_by("name", "version"))
    rubrics = list(rubrics)
    trust: dict[int, float] = {}
    if filters.min_trust is not None or filters.weighting == "trust":
        from .quality import annotator_trust_scores

        trust = annotator_trust_scores(rounds=list(filters.rounds) or None)
    return ExportContext(
        filters=filters,
        axes=tuple(dict.fromkeys(key for r in rubrics for key in r.axis_keys)),
        flags=tuple(dict.fromkeys(key for r in rubrics for key in r.flag_keys)),
        annotator=_namer(pseudonymous),
        trust=trust,
        weights=(lambda uid: trust.get(uid, UNKNOWN_TRUST))
        if filters.weighting == "trust"
        else _equal,
    )


def _legacy_context(
    *, axis: str = "", consensus: str = "none", weights: Weights = _equal
) -> ExportContext:
    """The context of the row functions called on their own (snapshots, the research page):
    every rubric's fields, pseudonyms."""
    context = export_context(
        filters=ExportFilters(axis=axis, consensus=consensus),
        rubrics=Rubric.objects.order_by("name", "version"),
    )
    return replace(context, weights=weights)


def _kept(judgments: Iterable[JudgmentRecord], context: ExportContext) -> Iterator[JudgmentRecord]:
    """The flag and trust filters, judgment by judgment."""
    f = context.filters
    wanted, unwanted = set(f.flags), set(f.exclude_flags)
    for judgment in judgments:
        if wanted and wanted.isdisjoint(judgment.flags):
            continue
        if unwanted and not unwanted.isdisjoint(judgment.flags):
            continue
        if (
            f.min_trust is not None
            and context.trust.get(judgment.annotator_id, UNKNOWN_TRUST) < f.min_trust
        ):
            continue
        yield judgment


def tasks_of(judgments: Iterable[AnyJudgment]) -> Iterator[list[AnyJudgment]]:
    """Judgments in ``EXPORT_ORDER`` a task at a time."""
    for _, group in itertools.groupby(judgments, key=lambda judgment: judgment.task_id):
        yield list(group)


def _agreeing(judgments: Iterable[JudgmentRecord], threshold: float) -> Iterator[JudgmentRecord]:
    from .quality import task_agreement

    for group in tasks_of(judgments):
        agreement = task_agreement([j.ranking for j in group]) if len(group) > 1 else None
        if agreement is not None and agreement >= threshold:
            yield from group


# --- Pairs --------------------------------------------------------------------------------------


def _judgment_pairs(judgment: JudgmentRecord, axis: str) -> list[PairCut]:
    return judgment_pairs(
        judgment.rubric, judgment.ranking, judgment.scores, judgment.strength, axis
    )


def _each_judgment_pair_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """Every judgment's own pairs, with its scores, ranks, strength and flags (``PairBatch``)."""
    for batch in pair_batches(judgments, context, EXPLICIT, size=CHUNK_SIZE):
        yield from batch.rows()


def _consensus_pair_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """One set of pairs per task (``annotation.consensus``): a task judged once gives its
    ranking's pairs; one judged several times the pairs of its (weighted) Bradley-Terry
    consensus, each once, with margin 2·P(chosen wins) - 1; with an axis, the pairs of the
    weighted mean of its annotators' scores on that axis."""
    axis = context.filters.axis
    for group in tasks_of(judgments):
        task = group[0].task
        if len(group) == 1:
            pairs, rule = _judgment_pairs(group[0], axis), "single"
        elif axis:
            width = axis_width(group[-1].rubric, axis)
            means = weighted_mean_scores(
                [(j.scores, context.weights(j.annotator_id)) for j in group], axis
            )
            pairs, rule = ([] if width is None else score_pairs(means, width)), "weighted_mean"
        else:
            consensus = task_consensus(
                list(task.completions),
                [(j.ranking, context.weights(j.annotator_id)) for j in group],
            )
            pairs, rule = consensus.pairs(), "bradley_terry"
        shared = {
            "consensus": rule,
            "rubric": group[-1].rubric.label,
            "judgments": len(group),
            "judgment_ids": [j.pk for j in group],
            "annotators": [context.annotator(j.annotator_id) for j in group],
        }
        for pair in pairs:
            yield pair_row(task, pair, axis) | shared


def _pair_batches(
    judgments: Iterable[JudgmentRecord], context: ExportContext, head: PairHead
) -> Iterator[PairBatch | RowBatch]:
    """A pair format's batches: columnar for every judgment's own pairs, rows for consensus."""
    if context.filters.consensus == "none":
        return pair_batches(judgments, context, head, size=CHUNK_SIZE)
    rows = (head.row(row) for row in _consensus_pair_rows(judgments, context))
    return row_batches(rows, size=settings.EXPORT_BATCH_ROWS)


def _pair_format(head: PairHead) -> tuple[RowsOf, BatchesOf]:
    """A pair format's rows and batches, in the shape ``head`` gives them."""

    def batches(
        judgments: Iterable[JudgmentRecord], context: ExportContext
    ) -> Iterator[PairBatch | RowBatch]:
        return _pair_batches(judgments, context, head)

    def rows(
        judgments: Iterable[JudgmentRecord], context: ExportContext
    ) -> Iterator[dict[str, Any]]:
        for batch in batches(judgments, context):
            yield from batch.rows()

    return rows, batches


_trl_rows, _trl_batches = _pair_format(EXPLICIT)
_trl_implicit_rows, _trl_implicit_batches = _pair_format(IMPLICIT)
_hh_rows, _hh_batches = _pair_format(TRANSCRIPT)


# --- One row per judgment, per example, per demonstration -----------------------------------------


def _last_user_turn(messages: Sequence[Mapping[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _ultrafeedback_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """UltraFeedback's shape: per judgment, the instruction and every completion with its
    per-axis rating; the judgment's rationale stands as every axis's rationale."""
    axis = context.filters.axis
    axes = (axis,) if axis else context.axes
    for judgment in judgments:
        if axis and axis not in judgment.rubric.axis_keys:
            continue
        task = judgment.task
        messages = task.messages
        completions = []
        for slot in task.slots:
            scores = judgment.scores.get(str(slot.completion_id), {})
            completions.append(
                {
                    "completion_id": slot.completion_id,
                    "model": slot.policy,
                    "response": slot.text,
                    "annotations": {
                        key: {"Rating": scores.get(key, ABSENT), "Rationale": judgment.rationale}
                        for key in axes
                    },
                }
            )
        yield {
            "instruction": _last_user_turn(messages),
            "prompt": messages,
            "completions": completions,
            "judgment_id": judgment.pk,
            "annotator": context.annotator(judgment.annotator_id),
            "task_id": task.pk,
            "round": task.round,
            "rubric": judgment.rubric.label,
            "ranking": judgment.ranking,
        }


def _kto_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """Unpaired examples for KTO (Ethayarajh et al., 2024): the completions ranked best are
    desirable (``label`` true) and those ranked worst undesirable; the middle ones, whose
    goodness a ranking does not say, are left out. Per judgment, or with a consensus per task
    ordered by its Bradley-Terry consensus; a ranking whose completions all tie gives nothing."""
    if context.filters.consensus == "none":
        groups: Iterable[list[JudgmentRecord]] = ([judgment] for judgment in judgments)
    else:
        groups = tasks_of(judgments)
    for group in groups:
        task = group[0].task
        completions = task.completions
        if len(group) == 1:
            ranking = group[0].ranking
        else:
            ranking = task_consensus(
                list(completions), [(j.ranking, context.weights(j.annotator_id)) for j in group]
            ).groups()
        if len(ranking) < 2:
            continue
        shared = {
            "task_id": task.pk,
            "round": task.round,
            "rubric": group[-1].rubric.label,
            "judgments": len(group),
            "judgment_ids": [j.pk for j in group],
            "annotators": [context.annotator(j.annotator_id) for j in group],
        }
        for label, members in ((True, ranking[0]), (False, ranking[-1])):
            for cid in members:
                yield {
                    "prompt": task.messages,
                    "completion": [{"role": "assistant", "content": completions[cid].text}],
                    "label": label,
                    "completion_id": cid,
                    "policy": completions[cid].policy,
                    **shared,
                }


def _judgment_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """Every field of every judgment, as recorded."""
    for judgment in judgments:
        task = judgment.task
        slots = task.slots
        row = {
            "judgment_id": judgment.pk,
            "assignment_id": judgment.assignment_id,
            "task_id": task.pk,
            "round": task.round,
            "round_policy": task.round_policy,
            "prompt": task.messages,
            "completions": [
                {
                    "completion_id": slot.completion_id,
                    "position": slot.position,
                    "policy": slot.policy,
                    "text": slot.text,
                }
                for slot in slots
            ],
            "ranking": judgment.ranking,
            "scores": [
                {"completion_id": slot.completion_id, "axis": axis, "score": score}
                for slot in slots
                for axis, score in judgment.scores.get(str(slot.completion_id), {}).items()
            ],
            "strength": judgment.strength,
        }
        if context.flags:
            row["flags"] = context.flag_struct(judgment.flags)
        yield row | {
            "rationale": judgment.rationale,
            "time_spent_ms": judgment.time_spent_ms,
            "rubric": judgment.rubric.label,
            "annotator": context.annotator(judgment.annotator_id),
            "created_at": judgment.created_at.isoformat(),
            "gold": task.gold,
        }


def _sft_rows(
    demonstrations: Iterable[Demonstration], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """Demonstrations as conversations ending in the ideal answer (TRL's conversational
    language-modelling format); ``source_completion_id`` is 0 for an answer written from scratch."""
    for demo in demonstrations:
        yield {
            "messages": [*demo.prompt.messages, {"role": "assistant", "content": demo.text}],
            "demonstration_id": demo.pk,
            "prompt_id": demo.prompt_id,
            "author": context.annotator(demo.author_id),
            "source_completion_id": demo.source_completion_id or ABSENT,
            "created_at": demo.created_at.isoformat(),
        }


# --- The row functions of earlier callers (snapshots, the research page) ------------------------


def preference_rows(
    judgments: Iterable[Judgment], *, context: ExportContext | None = None
) -> Iterator[dict[str, Any]]:
    """Every judgment's ranking pairs in the ``trl`` format."""
    yield from _each_judgment_pair_rows(_records(judgments), context or _legacy_context())


def axis_pair_rows(judgments: Iterable[Judgment], axis: str) -> Iterator[dict[str, Any]]:
    """Pairs from one rubric axis's scores (for a per-axis reward model): within a judgment,
    every two completions whose scores on ``axis`` differ, the higher one chosen; the margin is
    the difference over the scale's width. The ranking plays no part."""
    yield from _each_judgment_pair_rows(_records(judgments), _legacy_context(axis=axis))


def consensus_preference_rows(
    judgments: Iterable[Judgment], *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """Preference pairs with one Bradley-Terry consensus per task (see ``_consensus_pair_rows``)."""
    context = _legacy_context(consensus="bradley_terry", weights=weights)
    yield from _consensus_pair_rows(_records(judgments), context)


def consensus_axis_pair_rows(
    judgments: Iterable[Judgment], axis: str, *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """Per-axis pairs with one consensus per task: the weighted mean of its annotators' scores."""
    context = _legacy_context(axis=axis, consensus="bradley_terry", weights=weights)
    yield from _consensus_pair_rows(_records(judgments), context)


def kto_rows(
    judgments: Iterable[Judgment], *, weights: Weights = _equal
) -> Iterator[dict[str, Any]]:
    """KTO examples, a task with several judgments ordered by its consensus (``_kto_rows``)."""
    context = _legacy_context(consensus="bradley_terry", weights=weights)
    yield from _kto_rows(_records(judgments), context)


# --- Schemas (pyarrow, imported when a Parquet file is written) ---------------------------------


def _messages(pa: Any) -> pa.DataType:
    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _flag_fields(pa: Any, context: ExportContext) -> list[tuple[str, pa.DataType]]:
    # Parquet cannot store a struct without fields: rubrics without flags give no column.
    if not context.flags:
        return []
    return [("flags", pa.struct([(flag, pa.bool_()) for flag in context.flags]))]


def _pair_fields(pa: Any, context: ExportContext) -> list[tuple[str, pa.DataType]]:
    common = [
        ("margin", pa.float64()), ("axis", pa.string()),
        ("chosen_completion_id", pa.int64()), ("rejected_completion_id", pa.int64()),
        ("chosen_policy", pa.string()), ("rejected_policy", pa.string()),
        ("task_id", pa.int64()), ("round", pa.int64()),
    ]  # fmt: skip
    if context.filters.consensus != "none":
        return [
            *common,
            ("consensus", pa.string()), ("rubric", pa.string()), ("judgments", pa.int64()),
            ("judgment_ids", pa.list_(pa.string())), ("annotators", pa.list_(pa.string())),
        ]  # fmt: skip
    scores = pa.struct([(axis, pa.int64()) for axis in context.axes])
    return [
        *common,
        ("chosen_scores", scores), ("rejected_scores", scores),
        ("chosen_rank", pa.int64()), ("rejected_rank", pa.int64()), ("strength", pa.string()),
        *_flag_fields(pa, context),
        ("rubric", pa.string()), ("judgment_id", pa.string()), ("annotator", pa.string()),
    ]  # fmt: skip


def _trl_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    turns = _messages(pa)
    return pa.schema(
        [("prompt", turns), ("chosen", turns), ("rejected", turns), *_pair_fields(pa, context)]
    )


def _trl_implicit_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    turns = _messages(pa)
    return pa.schema([("chosen", turns), ("rejected", turns), *_pair_fields(pa, context)])


def _hh_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    text = pa.string()
    return pa.schema([("chosen", text), ("rejected", text), *_pair_fields(pa, context)])


def _ultrafeedback_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    axes = (context.filters.axis,) if context.filters.axis else context.axes
    rating = pa.struct([("Rating", pa.int64()), ("Rationale", pa.string())])
    completion = pa.struct([
        ("completion_id", pa.int64()), ("model", pa.string()), ("response", pa.string()),
        ("annotations", pa.struct([(axis, rating) for axis in axes])),
    ])  # fmt: skip
    return pa.schema([
        ("instruction", pa.string()), ("prompt", _messages(pa)),
        ("completions", pa.list_(completion)), ("judgment_id", pa.string()),
        ("annotator", pa.string()), ("task_id", pa.int64()), ("round", pa.int64()),
        ("rubric", pa.string()), ("ranking", pa.list_(pa.list_(pa.int64()))),
    ])  # fmt: skip


def _kto_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("prompt", _messages(pa)), ("completion", _messages(pa)), ("label", pa.bool_()),
        ("completion_id", pa.int64()), ("policy", pa.string()), ("task_id", pa.int64()),
        ("round", pa.int64()), ("rubric", pa.string()), ("judgments", pa.int64()),
        ("judgment_ids", pa.list_(pa.string())), ("annotators", pa.list_(pa.string())),
    ])  # fmt: skip


def _judgments_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    completion = pa.struct([
        ("completion_id", pa.int64()), ("position", pa.int64()), ("policy", pa.string()),
        ("text", pa.string()),
    ])  # fmt: skip
    score = pa.struct([("completion_id", pa.int64()), ("axis", pa.string()), ("score", pa.int64())])
    return pa.schema([
        ("judgment_id", pa.string()), ("assignment_id", pa.string()), ("task_id", pa.int64()),
        ("round", pa.int64()), ("round_policy", pa.string()), ("prompt", _messages(pa)),
        ("completions", pa.list_(completion)), ("ranking", pa.list_(pa.list_(pa.int64()))),
        ("scores", pa.list_(score)), ("strength", pa.string()), *_flag_fields(pa, context),
        ("rationale", pa.string()), ("time_spent_ms", pa.int64()), ("rubric", pa.string()),
        ("annotator", pa.string()), ("created_at", pa.string()), ("gold", pa.bool_()),
    ])  # fmt: skip


def _sft_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([
        ("messages", _messages(pa)), ("demonstration_id", pa.int64()), ("prompt_id", pa.int64()),
        ("author", pa.string()), ("source_completion_id", pa.int64()),
        ("created_at", pa.string()),
    ])  # fmt: skip


# --- The registry -------------------------------------------------------------------------------

_PAIR_FILTERS = frozenset(_NAMES)
_PER_JUDGMENT = _PAIR_FILTERS - {"consensus", "weighting"}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its rows, its Parquet schema, and the filters it honours (any other
    filter set to a value of its own is refused rather than silently ignored). A format with
    ``batches`` writes its files from those (``annotation.export_batches``); the others
    batch their rows."""

    name: str
    description: str  # one line, for the UI
    unit: str  # what a row is: "pair", "example", "judgment" or "demonstration"
    rows: RowsOf
    schema: Callable[[ExportContext], pa.Schema]
    honours: frozenset[str] = _PAIR_FILTERS
    batches: BatchesOf | None = None

    @property
    def reads(self) -> str:
        return "demonstration" if self.unit == "demonstration" else "judgment"


FORMATS: dict[str, ExportFormat] = {
    spec.name: spec
    for spec in (
        ExportFormat(
            "trl", "TRL preference pairs, explicit prompt, conversational (DPO, reward models)",
            "pair", _trl_rows, _trl_schema, batches=_trl_batches,
        ),
        ExportFormat(
            "trl_implicit", "TRL preference pairs, implicit prompt: chosen and rejected are "
            "whole conversations", "pair", _trl_implicit_rows, _trl_implicit_schema,
            batches=_trl_implicit_batches,
        ),
        ExportFormat(
            "hh_rlhf", "Anthropic HH-RLHF transcripts (\\n\\nHuman: … \\n\\nAssistant: …)",
            "pair", _hh_rows, _hh_schema, batches=_hh_batches,
        ),
        ExportFormat(
            "ultrafeedback", "Fine-grained per-axis ratings of every completion, "
            "UltraFeedback-like, one row per judgment", "judgment", _ultrafeedback_rows,
            _ultrafeedback_schema, _PER_JUDGMENT,
        ),
        ExportFormat(
            "kto", "KTO unpaired examples: best-ranked desirable, worst-ranked undesirable",
            "example", _kto_rows, _kto_schema, _PAIR_FILTERS - {"axis"},
        ),
        ExportFormat(
            "sft", "SFT conversations from demonstrations (messages)", "demonstration",
            _sft_rows, _sft_schema, frozenset({"rounds", "since", "until", "min_trust"}),
        ),
        ExportFormat(
            "judgments", "Raw judgments with every field and pseudonymous annotator ids",
            "judgment", _judgment_rows, _judgments_schema, _PER_JUDGMENT - {"axis"},
        ),
    )
}  # fmt: skip


def export_format(fmt: str) -> ExportFormat:
    spec = FORMATS.get(fmt)
    if spec is None:
        raise DomainError(
            f"Unknown format {fmt!r}.",
            fields={"format": [f"Must be one of: {', '.join(FORMATS)}."]},
        )
    return spec


def export_check(*, fmt: str, filters: ExportFilters) -> ExportFormat:
    """The format, once it is known to honour every filter that is set."""
    spec = export_format(fmt)
    defaults = ExportFilters()
    errors = {
        name: [f"Does not apply to the {fmt} format."]
        for name in sorted(_NAMES - spec.honours)
        if getattr(filters, name) != getattr(defaults, name)
    }
    if errors:
        raise DomainError(f"Filters the {fmt} format cannot apply: {', '.join(errors)}.",
                          fields=errors)  # fmt: skip
    return spec


@dataclass(frozen=True)
class ExportPlan:
    """A checked export: its format and context, ready to stream rows or give its schema."""

    format: ExportFormat
    context: ExportContext

    def schema(self) -> pa.Schema:
        return self.format.schema(self.context)

    def rows(self, progress: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
        return self.format.rows(self._source(progress), self.context)

    def batches(
        self, progress: Callable[[int], None] | None = None
    ) -> Iterator[PairBatch | RowBatch]:
        """The rows in batches, each able to give its JSONL."""
        source = self._source(progress)
        if self.format.batches is not None:
            return self.format.batches(source, self.context)
        return row_batches(self.format.rows(source, self.context), size=settings.EXPORT_BATCH_ROWS)

    def jsonl(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The export as JSONL, UTF-8, a batch at a time (what ``jsonl_lines`` gives, faster)."""
        for batch in self.batches(progress):
            yield batch.jsonl()

    def _source(self, progress: Callable[[int], None] | None) -> Iterator[Any]:
        f = self.context.filters
        if self.format.reads == "demonstration":
            demonstrations = (
                demonstrations_selected(filters=f)
                .select_related("prompt")
                .order_by("created_at", "id")
                .iterator(chunk_size=CHUNK_SIZE)
            )
            return self._trusted_authors(_counted(demonstrations, progress))
        judgments = judgment_records(filters=f, times=self.format.name == "judgments")
        judgments = _kept(_counted(judgments, progress), self.context)
        if f.min_agreement is not None:
            judgments = _agreeing(judgments, f.min_agreement)
        return judgments

    def _trusted_authors(self, demonstrations: Iterable[Demonstration]) -> Iterator[Any]:
        threshold = self.context.filters.min_trust
        for demo in demonstrations:
            if (
                threshold is None
                or self.context.trust.get(demo.author_id, UNKNOWN_TRUST) >= threshold
            ):
                yield demo


def _counted(items: Iterable[Any], progress: Callable[[int], None] | None) -> Iterator[Any]:
    """``items``, telling ``progress`` how many were read once per chunk and at the end."""
    if progress is None:
        yield from items
        return
    read = 0
    for item in items:
        yield item
        read += 1
        if read % CHUNK_SIZE == 0:
            progress(read)
    progress(read)


def export_prepare(*, fmt: str, filters: ExportFilters, pseudonymous: bool = True) -> ExportPlan:
    """Check the export and settle its context now, so that a bad request fails before the
    first byte is sent; the rows are read when they are iterated."""
    spec = export_check(fmt=fmt, filters=filters)
    rubrics = () if spec.reads == "demonstration" else None
    context = export_context(filters=filters, pseudonymous=pseudonymous, rubrics=rubrics)
    return ExportPlan(spec, context)


def export_rows(
    *, fmt: str, filters: ExportFilters, pseudonymous: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The rows of an export, streamed; ``progress(n)`` hears how many judgments (or
    demonstrations) have been read. Raises ``DomainError`` at once for a bad format or filter."""
    return export_prepare(fmt=fmt, filters=filters, pseudonymous=pseudonymous).rows(progress)


def export_source_count(*, fmt: str, filters: ExportFilters) -> int:
    """How many judgments (or demonstrations) the export will read: a progress bar's total."""
    spec = export_check(fmt=fmt, filters=filters)
    if spec.reads == "demonstration":
        return demonstrations_selected(filters=filters).count()
    return judgments_selected(filters=filters).count()


def preference_pair_count(*, rounds: list[int] | None = None) -> int:
    """How many rows the preference export has: C(K,2) minus the tied pairs, per judgment."""
    judgments = Judgment.objects.all()
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    total = 0
    for ranking in judgments.values_list("ranking", flat=True).iterator(chunk_size=CHUNK_SIZE):
        sizes = [len(group) for group in ranking]
        k = sum(sizes)
        total += (k * (k - 1) - sum(g * (g - 1) for g in sizes)) // 2
    return total


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json_encode(row) + "\n"
