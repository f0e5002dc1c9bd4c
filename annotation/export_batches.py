"""Export rows a batch at a time, and each batch straight to JSONL.

Every format's rows are dicts (``annotation.exports``). Written one by one, a dict and a
``json.dumps`` per row, the preference-pair formats spend most of their time encoding the same
values again: a pair row carries its prompt and both completions, a judgment of K completions
gives C(K, 2) rows, and a task judged by three annotators gives its prompt to 3·C(K, 2) rows.
``PairBatch`` holds a chunk of judgments with their pairs and encodes each prompt, completion,
score struct and judgment's shared fields once (``Encoded`` keeps what recurs across the whole
export); a JSONL line is then those pieces joined: byte for byte what
``json.dumps(row, ensure_ascii=False)`` writes for the row dict (tests compare the two on every
pair format). No JSON library does this (they all encode a value as often as it occurs), and a
faster encoder alone would change the bytes (orjson writes no space after separators) without
removing the repetition, which is most of the work.

Formats without a columnar form (per-judgment rows, consensus pairs, demonstrations) go through
``RowBatch``: their dicts and ``json.dumps``. Parquet files are written from the same JSONL
(``annotation.export_files``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .pairs import PairCut, RankedCut, judgment_ranked_pairs

# An id or score a row does not have (``annotation.exports`` says why it is 0, not null).
ABSENT = 0

if TYPE_CHECKING:
    from .exports import ExportContext, JudgmentRecord, TaskRecord

# ``json.dumps(value, ensure_ascii=False)``, without building an encoder on every call.
json_encode = json.JSONEncoder(ensure_ascii=False).encode

Messages = list[dict[str, str]]


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join([json_encode(row) + "\n" for row in rows])


class RowBatch:
    """Rows as dicts, for formats without a columnar form."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows)

    def jsonl(self) -> bytes:
        """The batch as JSONL, UTF-8."""
        return jsonl_text(self._rows).encode()


def row_batches(rows: Iterable[dict[str, Any]], *, size: int) -> Iterator[RowBatch]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, max(1, size))):
        yield RowBatch(chunk)


# --- Preference pairs ---------------------------------------------------------------------------

HH_SPEAKERS = {"user": "Human", "assistant": "Assistant"}


def hh_transcript(messages: Iterable[Mapping[str, str]]) -> str:
    """A conversation as an HH-RLHF transcript, ``"\\n\\nHuman: …\\n\\nAssistant: …"``. HH has no
    system speaker: as in Anthropic's text-completion prompts, a system turn's text comes
    first, before the first ``"\\n\\nHuman:"``."""
    return "".join(
        message["content"]
        if message["role"] == "system"
        else f"\n\n{HH_SPEAKERS[message['role']]}: {message['content']}"
        for message in messages
    )


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
TRANSCRIPT = PairHead(False, lambda prompt, turn: hh_transcript(prompt + turn))


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


def pair_batches(
    judgments: Iterable[JudgmentRecord], context: ExportContext, head: PairHead, *, size: int
) -> Iterator[PairBatch]:
    """``judgments``' pairs, ``size`` judgments a batch."""
    judgments = iter(judgments)
    encoded = Encoded()
    while chunk := list(itertools.islice(judgments, max(1, size))):
        yield PairBatch(chunk, context, head, encoded)
