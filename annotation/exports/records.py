"""The record stream: what an export reads, as plain records, in constant memory.

Judgments are selected with the filters the database applies (rounds, policies, rubric, dates),
read a chunk at a time a task at a time (``EXPORT_ORDER``) with their tasks' prompts and
completions, and then kept or dropped one by one (flags, trust) and a task at a time
(agreement), which works the same on every database and costs nothing extra for the full export.
Demonstrations (the SFT format) are read the same way.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    TextField,
)
from django.db.models.functions import Cast

from ..models import ComparisonTask, Demonstration, Judgment, Rubric, TaskCompletion
from .filters import UNKNOWN_TRUST, ExportFilters

# Rows fetched per query round trip, and judgments per batch of the pair formats. Read at call
# time (``records.CHUNK_SIZE``), so that a test can make it small.
CHUNK_SIZE = 250

# Exports read judgments a task at a time: a consensus needs a task's judgments together, and
# every format reads and encodes a task's prompt and completions once for all its judgments
# rather than once for each (a task judged three times was read three times in judgment
# order). Within a task, judgments come in the order they were made.
EXPORT_ORDER = ("task_id", "created_at", "id")

Progress = Callable[[int], None]
Item = TypeVar("Item")


def judgments_selected(*, filters: ExportFilters) -> QuerySet[Judgment]:
    """The judgments an export reads: the filters the database applies."""
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


def preference_pair_count(*, rounds: list[int] | None = None) -> int:
    """How many rows the preference export has: C(K,2) minus the tied pairs, per judgment
    (those that found no answer acceptable are not in it by default)."""
    judgments = Judgment.objects.filter(none_acceptable=False)
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    total = 0
    for ranking in judgments.values_list("ranking", flat=True).iterator(chunk_size=CHUNK_SIZE):
        sizes = [len(group) for group in ranking]
        k = sum(sizes)
        total += (k * (k - 1) - sum(g * (g - 1) for g in sizes)) // 2
    return total


# What the row builders read: plain records rather than model instances. Building a dozen model
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
    # Completion ids in the order the annotator was shown them; empty unless read with ``times``
    # (or where it was not recorded).
    display_order: list[int]
    none_acceptable: bool = False  # no answer was acceptable (``Judgment.none_acceptable``)

    @property
    def task_id(self) -> int:
        return self.task.pk


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
    for pk, messages, number, policy, gold in task_rows:
        slots: list[SlotRecord] = []
        if slot_task == pk:
            slots = [SlotRecord(*slot) for _, *slot in slot_group]
            slot_task, slot_group = next(slots_by_task, (None, iter(())))
        ordered = tuple(sorted(slots, key=lambda slot: slot.position))
        yield TaskRecord(
            pk, _json_decode(messages), number, policy or "", gold, ordered,
            {slot.completion_id: slot for slot in ordered},
        )  # fmt: skip


JUDGMENT_COLUMNS = (
    "id", "assignment_id", "task_id", "annotator_id", "rubric_id", "ranking_text", "scores_text",
    "strength", "flags_text", "rationale", "time_spent_ms", "none_acceptable",
)  # fmt: skip


def judgment_records(*, filters: ExportFilters, times: bool = True) -> Iterator[JudgmentRecord]:
    """``judgments_selected`` as records in ``EXPORT_ORDER``, streamed with their tasks
    (``_task_stream``). Without ``times`` a record's ``created_at`` is None and its
    ``display_order`` empty: Django reads each timestamp through a Python parser, a tenth of the
    read, and only the raw judgments format shows either."""
    selected = judgments_selected(filters=filters)
    rows = (
        selected.order_by(*EXPORT_ORDER)
        .annotate(
            ranking_text=_text("ranking"), scores_text=_text("scores"), flags_text=_text("flags")
        )
        .annotate(display_order_text=_text("display_order"))
        .values_list(*JUDGMENT_COLUMNS, *(["created_at", "display_order_text"] if times else []))
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
            row[12] if times else None, _json_decode(row[13]) if times else [], row[11],
        )  # fmt: skip


def tasks_of(judgments: Iterable[JudgmentRecord]) -> Iterator[list[JudgmentRecord]]:
    """Judgments in ``EXPORT_ORDER`` a task at a time."""
    for _, group in itertools.groupby(judgments, key=lambda judgment: judgment.task_id):
        yield list(group)


def _counted(items: Iterable[Item], progress: Progress | None) -> Iterator[Item]:
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


def _kept(
    judgments: Iterable[JudgmentRecord], filters: ExportFilters, trust: Mapping[int, float]
) -> Iterator[JudgmentRecord]:
    """The flag and trust filters, judgment by judgment."""
    wanted, unwanted = set(filters.flags), set(filters.exclude_flags)
    for judgment in judgments:
        if wanted and wanted.isdisjoint(judgment.flags):
            continue
        if unwanted and not unwanted.isdisjoint(judgment.flags):
            continue
        if (
            filters.min_trust is not None
            and trust.get(judgment.annotator_id, UNKNOWN_TRUST) < filters.min_trust
        ):
            continue
        yield judgment


def _agreeing(judgments: Iterable[JudgmentRecord], threshold: float) -> Iterator[JudgmentRecord]:
    from ..quality import task_agreement

    for group in tasks_of(judgments):
        agreement = task_agreement([j.ranking for j in group]) if len(group) > 1 else None
        if agreement is not None and agreement >= threshold:
            yield from group


def judgment_stream(
    *, filters: ExportFilters, trust: Mapping[int, float], times: bool,
    progress: Progress | None = None,
) -> Iterator[JudgmentRecord]:  # fmt: skip
    """The judgments an export reads, every filter applied; ``progress(n)`` hears how many were
    read before the flag, trust and agreement filters."""
    judgments = _counted(judgment_records(filters=filters, times=times), progress)
    judgments = _kept(judgments, filters, trust)
    if filters.min_agreement is not None:
        judgments = _agreeing(judgments, filters.min_agreement)
    return judgments


def demonstration_stream(
    *, filters: ExportFilters, trust: Mapping[int, float], progress: Progress | None = None
) -> Iterator[Demonstration]:
    """The demonstrations an export reads, by date, those of untrusted authors left out."""
    demonstrations = (
        demonstrations_selected(filters=filters)
        .select_related("prompt")
        .order_by("created_at", "id")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    threshold = filters.min_trust
    for demo in _counted(demonstrations, progress):
        if threshold is None or trust.get(demo.author_id, UNKNOWN_TRUST) >= threshold:
            yield demo
