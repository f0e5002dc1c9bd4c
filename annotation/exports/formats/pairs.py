"""The preference-pair formats: TRL's explicit prompt (``trl``, the conversational format
``DPOTrainer`` and ``RewardTrainer`` load directly) and implicit prompt (``trl_implicit``); the
HH-RLHF transcripts (``hh_rlhf.py``) are the same rows in another shape (``PairHead``).

Every judgment's own pairs are written from column batches. Written one by one, a dict and a
``json.dumps`` per row, these formats spend most of their time encoding the same values again: a
pair row carries its prompt and both completions, a judgment of K completions gives C(K, 2)
rows, and a task judged by three annotators gives its prompt to 3·C(K, 2) rows. ``PairBatch``
holds a chunk of judgments with their pairs and encodes each prompt, completion, score struct and
judgment's shared fields once (``Encoded`` keeps what recurs across the whole export); a JSONL
line is then those pieces joined: byte for byte what ``json.dumps(row, ensure_ascii=False)``
writes for the row dict (tests compare the two on every pair format). No JSON library does this
(they all encode a value as often as it occurs), and a faster encoder alone would change the
bytes (orjson writes no space after separators) without removing the repetition, which is most
of the work. Consensus pairs (one set per task) go through ``RowBatch``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from ...pairs import PairCut, RankedCut, judgment_ranked_pairs
from .. import records
from ..consensus import consensus_none_acceptable, consensus_pairs, consensus_provenance
from ..context import ABSENT, ExportContext
from ..records import JudgmentRecord, TaskRecord, tasks_of
from .base import (
    Batch,
    ExportFormat,
    Messages,
    flag_fields,
    json_encode,
    messages_type,
    row_batches,
)

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class PairHead:
    """How a pair format writes the conversation: the prompt in a column of its own with the
    answer turns as ``chosen`` and ``rejected`` (``with_prompt``), or each side the whole
    conversation, ``side(prompt, answer turn)`` (a message list, or an HH transcript)."""

    with_prompt: bool
    side: Callable[[Messages, Messages], Any]

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A ``trl`` row in this head's shape (the columns after ``rejected`` keep their order)."""
        if not self.with_prompt:
            prompt = row.pop("prompt")
            row["chosen"] = self.side(prompt, row["chosen"])
            row["rejected"] = self.side(prompt, row["rejected"])
        return row


EXPLICIT = PairHead(True, lambda prompt, turn: turn)
IMPLICIT = PairHead(False, lambda prompt, turn: prompt + turn)


def _turn(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def pair_row(task: TaskRecord, pair: PairCut, axis: str) -> dict[str, Any]:
    """The columns every ``trl`` pair row starts with."""
    chosen_id, rejected_id, margin = pair
    chosen, rejected = task.completions[chosen_id], task.completions[rejected_id]
    return {
        "prompt": task.messages,
        "chosen": _turn(chosen.text),
        "rejected": _turn(rejected.text),
        "margin": float(margin),
        "axis": axis,
        "chosen_completion_id": chosen_id,
        "rejected_completion_id": rejected_id,
        "chosen_policy": chosen.policy,
        "rejected_policy": rejected.policy,
        "task_id": task.pk,
        "round": task.round,
    }


class Encoded(dict[Any, bytes]):
    """JSON of values that recur across a whole export (policy names, strengths, rubric labels,
    annotators, flag and score structs), each encoded once and shared by all its batches."""

    def of(self, key: tuple[str, Any], make: Callable[[], Any] | None = None) -> bytes:
        """The JSON of ``key[1]`` (or, with ``make``, of what ``make`` builds for that key).
        Keys are (kind, value) pairs whose values are of one type each per kind, never booleans
        where integers may stand (True and 1 are the same key)."""
        piece = self.get(key)
        if piece is None:
            value = key[1] if make is None else make()
            piece = self[key] = json_encode(value).encode()
        return piece


class PairBatch:
    """Every judgment's own pairs (``annotation.pairs.judgment_ranked_pairs``) for a chunk of
    judgments; each row also carries both completions' scores and ranks and the judgment's
    strength, flags, rubric, id and annotator. ``rows()`` and ``jsonl()`` give the same rows
    two ways."""

    __slots__ = ("context", "encoded", "head", "judgments", "size")

    def __init__(
        self,
        judgments: Iterable[JudgmentRecord],
        context: ExportContext,
        head: PairHead,
        encoded: Encoded | None = None,
    ) -> None:
        self.context, self.head = context, head
        self.encoded = Encoded() if encoded is None else encoded
        axis = context.filters.axis
        # Each judgment that has pairs, with them.
        self.judgments: list[tuple[JudgmentRecord, list[RankedCut]]] = []
        self.size = 0
        for judgment in judgments:
            if judgment.none_acceptable and not context.filters.include_none_acceptable:
                continue  # both sides of its pairs are bad answers (``sql._where`` agrees)
            cuts = judgment_ranked_pairs(
                judgment.rubric, judgment.ranking, judgment.scores, judgment.strength, axis
            )
            if cuts:
                self.judgments.append((judgment, cuts))
                self.size += len(cuts)

    def __len__(self) -> int:
        return self.size

    def _scores(self, judgment: JudgmentRecord, cid: int) -> dict[str, int]:
        return self.context.score_struct(judgment.scores.get(str(cid), {}))

    def rows(self) -> Iterator[dict[str, Any]]:
        context, axis = self.context, self.context.filters.axis
        for judgment, cuts in self.judgments:
            for chosen, rejected, chosen_rank, rejected_rank, margin in cuts:
                row = pair_row(judgment.task, (chosen, rejected, margin), axis) | {
                    "chosen_scores": self._scores(judgment, chosen),
                    "rejected_scores": self._scores(judgment, rejected),
                    "chosen_rank": chosen_rank,
                    "rejected_rank": rejected_rank,
                    "strength": judgment.strength,
                }
                if context.flags:
                    row["flags"] = context.flag_struct(judgment.flags)
                row["rubric"] = judgment.rubric.label
                row["judgment_id"] = judgment.pk
                row["annotator"] = context.annotator(judgment.annotator_id)
                if context.filters.include_none_acceptable:
                    row["none_acceptable"] = judgment.none_acceptable
                yield self.head.row(row)

    # JSONL: each value encoded once, each line the pieces joined (see the module docstring).

    def _task_pieces(self, task: TaskRecord) -> tuple[bytes, dict[int, bytes], dict[int, bytes]]:
        """A task's line opening (up to the chosen side's value), and by completion id its
        side and its policy, encoded."""
        head, encoded = self.head, self.encoded
        if head.with_prompt:
            opening = '{"prompt": ' + json_encode(task.messages) + ', "chosen": '
        else:
            opening = '{"chosen": '
        sides = {
            slot.completion_id: json_encode(head.side(task.messages, _turn(slot.text))).encode()
            for slot in task.slots
        }
        policies = {slot.completion_id: encoded.of(("policy", slot.policy)) for slot in task.slots}
        return opening.encode(), sides, policies

    def _judgment_close(self, judgment: JudgmentRecord) -> bytes:
        """The end of a judgment's lines: its strength, flags, rubric, id and annotator."""
        context, encoded = self.context, self.encoded
        flags = tuple(judgment.flags)
        annotator = judgment.annotator_id
        return b"".join((
            b'"strength": ', encoded.of(("strength", judgment.strength)), b", ",
            b'"flags": ' + encoded.of(("flags", flags), lambda: context.flag_struct(flags)) + b", "
            if context.flags else b"",
            b'"rubric": ', encoded.of(("rubric", judgment.rubric.label)),
            b', "judgment_id": ', json_encode(judgment.pk).encode(),
            b', "annotator": ',
            encoded.of(("annotator", annotator), lambda: context.annotator(annotator)),
            (b', "none_acceptable": true' if judgment.none_acceptable
             else b', "none_acceptable": false')
            if context.filters.include_none_acceptable else b"",
            b"}\n",
        ))  # fmt: skip

    def _score_pieces(self, judgment: JudgmentRecord) -> dict[int, bytes]:
        """A judgment's score struct for each completion, encoded: scores are few distinct
        tuples of small integers (``judgment_submit`` refuses anything else, booleans too)."""
        axes, scores, encoded = self.context.axes, judgment.scores, self.encoded
        pieces = {}
        for cid in judgment.task.completions:
            values = scores.get(str(cid), {})
            key = tuple([values.get(axis, ABSENT) for axis in axes])
            pieces[cid] = encoded.of(
                ("scores", key), lambda key=key: dict(zip(axes, key, strict=True))
            )
        return pieces

    def jsonl(self) -> bytes:
        """The batch as JSONL, UTF-8."""
        axis = json_encode(self.context.filters.axis)
        tasks: dict[int, tuple[bytes, dict[int, bytes], dict[int, bytes]]] = {}
        # Per margin, the bytes from it to the chosen id (margins are a few distinct floats).
        margins: dict[float, bytes] = {}
        pieces: list[bytes] = []
        add = pieces.extend
        for judgment, cuts in self.judgments:
            task = judgment.task
            if task.pk not in tasks:
                tasks[task.pk] = self._task_pieces(task)
            opening, sides, policies = tasks[task.pk]
            scores = self._score_pieces(judgment)
            ids = {cid: str(cid).encode() for cid in task.completions}
            where = f', "task_id": {task.pk}, "round": {task.round}, "chosen_scores": '.encode()
            close = self._judgment_close(judgment)
            for c, r, chosen_rank, rejected_rank, margin in cuts:
                middle = margins.get(margin)
                if middle is None:
                    middle = margins[margin] = (
                        f', "margin": {margin!r}, "axis": {axis}, "chosen_completion_id": '.encode()
                    )
                add((
                    opening, sides[c], b', "rejected": ', sides[r], middle, ids[c],
                    b', "rejected_completion_id": ', ids[r], b', "chosen_policy": ', policies[c],
                    b', "rejected_policy": ', policies[r], where, scores[c],
                    b', "rejected_scores": ', scores[r], b', "chosen_rank": ', RANKS[chosen_rank],
                    b', "rejected_rank": ', RANKS[rejected_rank], b", ", close,
                ))  # fmt: skip
        return b"".join(pieces)


# A completion's rank (1-based) as JSON bytes; K is at most a few dozen.
RANKS = tuple(str(rank).encode() for rank in range(257))


def _consensus_pair_rows(
    judgments: Iterable[JudgmentRecord], context: ExportContext
) -> Iterator[dict[str, Any]]:
    """One set of pairs per task (``consensus.consensus_pairs``), with the rule that made them
    and the judgments they stand for; a task whose judgments, as one, find no answer
    acceptable gives none unless asked (``include_none_acceptable``)."""
    axis = context.filters.axis
    for group in tasks_of(judgments):
        if not context.filters.include_none_acceptable and consensus_none_acceptable(
            group=group, context=context
        ):
            continue
        pairs, rule = consensus_pairs(group=group, context=context)
        shared = {"consensus": rule, **consensus_provenance(group=group, context=context)}
        if context.filters.include_none_acceptable:
            shared["none_acceptable"] = consensus_none_acceptable(group=group, context=context)
        for pair in pairs:
            yield pair_row(group[0].task, pair, axis) | shared


def pair_batches(
    judgments: Iterable[JudgmentRecord], context: ExportContext, head: PairHead
) -> Iterator[Batch]:
    """A pair format's batches: columnar for every judgment's own pairs (``CHUNK_SIZE``
    judgments a batch), rows for consensus."""
    if context.filters.consensus != "none":
        rows = (head.row(row) for row in _consensus_pair_rows(judgments, context))
        yield from row_batches(rows, size=settings.EXPORT_BATCH_ROWS)
        return
    judgments = iter(judgments)
    encoded = Encoded()
    while chunk := list(itertools.islice(judgments, max(1, records.CHUNK_SIZE))):
        yield PairBatch(chunk, context, head, encoded)


def pair_format(
    name: str, description: str, head: PairHead, schema: Callable[[ExportContext], pa.Schema]
) -> ExportFormat:
    """A pair format whose rows are ``trl``'s in the shape ``head`` gives them."""

    def batches(judgments: Iterable[JudgmentRecord], context: ExportContext) -> Iterator[Batch]:
        return pair_batches(judgments, context, head)

    def rows(
        judgments: Iterable[JudgmentRecord], context: ExportContext
    ) -> Iterator[dict[str, Any]]:
        for batch in batches(judgments, context):
            yield from batch.rows()

    return ExportFormat(name, description, "pair", rows, schema, batches=batches)


def pair_fields(pa: Any, context: ExportContext) -> list[tuple[str, pa.DataType]]:
    """The Arrow fields after ``chosen`` and ``rejected``, the same in every pair format."""
    common = [
        ("margin", pa.float64()), ("axis", pa.string()),
        ("chosen_completion_id", pa.int64()), ("rejected_completion_id", pa.int64()),
        ("chosen_policy", pa.string()), ("rejected_policy", pa.string()),
        ("task_id", pa.int64()), ("round", pa.int64()),
    ]  # fmt: skip
    # Only where they are read is a row told apart from the others by this column.
    outcome = [("none_acceptable", pa.bool_())] if context.filters.include_none_acceptable else []
    if context.filters.consensus != "none":
        return [
            *common,
            ("consensus", pa.string()), ("rubric", pa.string()), ("judgments", pa.int64()),
            ("judgment_ids", pa.list_(pa.string())), ("annotators", pa.list_(pa.string())),
            *outcome,
        ]  # fmt: skip
    scores = pa.struct([(axis, pa.int64()) for axis in context.axes])
    return [
        *common,
        ("chosen_scores", scores), ("rejected_scores", scores),
        ("chosen_rank", pa.int64()), ("rejected_rank", pa.int64()), ("strength", pa.string()),
        *flag_fields(pa, context),
        ("rubric", pa.string()), ("judgment_id", pa.string()), ("annotator", pa.string()),
        *outcome,
    ]  # fmt: skip


def _trl_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    turns = messages_type(pa)
    return pa.schema(
        [("prompt", turns), ("chosen", turns), ("rejected", turns), *pair_fields(pa, context)]
    )


def _trl_implicit_schema(context: ExportContext) -> pa.Schema:
    import pyarrow as pa

    turns = messages_type(pa)
    return pa.schema([("chosen", turns), ("rejected", turns), *pair_fields(pa, context)])


TRL = pair_format(
    "trl", "TRL preference pairs, explicit prompt, conversational (DPO, reward models)",
    EXPLICIT, _trl_schema,
)  # fmt: skip
TRL_IMPLICIT = pair_format(
    "trl_implicit", "TRL preference pairs, implicit prompt: chosen and rejected are whole "
    "conversations", IMPLICIT, _trl_implicit_schema,
)  # fmt: skip
