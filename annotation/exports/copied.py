"""The pair formats' lines as PostgreSQL writes them (``sql.pair_query``), streamed with binary
``COPY … TO STDOUT`` and handed on in batches, in constant memory.

Two server processes build the lines at once: the tasks are dealt to two connections in runs
of ``STRIPE`` consecutive ids (``sql.pair_query``'s parts), each connection's ``COPY`` streams
its runs in id order on a thread of its own, and the runs are taken back in id order, a merge
of the two streams. A thread reads at most ``AHEAD`` runs ahead (a few MB); then its
connection waits, and so does its server process. Inside a transaction (a test's, say) the
export must see what the transaction wrote, so it runs on Django's own connection, as one part.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

from django.conf import settings
from django.db import connection

from .context import ExportContext
from .records import Progress
from .sql import Query, pair_query

# Connections building lines at once, and the task ids in a run dealt to one of them: a run of
# tasks judged three times with four completions is ~1.5 MB of lines.
PARTS = 2
STRIPE = 50
# Runs a thread reads ahead of the one being handed on, and lines a batch at most.
AHEAD = 3
BATCH_LINES = 1000

# Settings the COPY runs under. JIT compiling the query's many expressions took longer (3 s)
# than running them for 200k pairs; floats are written as their shortest exact decimal
# (``sql._NEAR_HALF`` reads them back), as PostgreSQL does for any ``extra_float_digits`` > 0.
SESSION = {"jit": "off", "extra_float_digits": "1"}


class CopiedBatch:
    """Lines as the database wrote them, a task's lines a piece: joined only when asked for
    (``writers`` writes the pieces as they are)."""

    __slots__ = ("_pieces", "_rows")

    def __init__(self, pieces: list[memoryview], rows: int) -> None:
        self._pieces, self._rows = pieces, rows

    def __len__(self) -> int:
        return self._rows

    def rows(self) -> Iterator[dict[str, Any]]:
        return (json.loads(line) for line in self.jsonl().splitlines())

    def jsonl(self) -> bytes:
        return b"".join(self._pieces)

    def pieces(self) -> list[memoryview]:
        return self._pieces


# Binary COPY: a header (signature, flags, extension length) before the first row, then per
# row a field count and per field a length and the bytes, and -1 at the end. A row here: 4
# fields, the task id (int8), judgments read (int4), lines (int4), the lines (-1: none kept).
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_ROW = struct.Struct("!hiqiiiii")

# A run: its number (task id // STRIPE), judgments read, lines, and the lines in pieces.
Run = tuple[int, int, int, list[memoryview]]


def _runs(raw: Any, query: Query, part: int, parts: int) -> Iterator[Run]:
    """Part ``part`` of ``parts`` of the export's tasks, a run at a time, in id order."""
    statement = f"COPY ({query.sql}) TO STDOUT (FORMAT binary)"
    params = query.params | {"stripe": STRIPE, "stripes": parts, "part": part}
    current, judged, lines, pieces = -1, 0, 0, []
    with raw.cursor() as cursor, cursor.copy(statement, params) as copy:
        for block in copy:
            view = memoryview(block)
            if view[: len(_SIGNATURE)] == _SIGNATURE:
                (extension,) = struct.unpack_from("!i", view, len(_SIGNATURE) + 4)
                view = view[len(_SIGNATURE) + 8 + extension :]
            if len(view) == 2:  # the trailer
                continue
            task, read, pairs = _row(view)
            if task // STRIPE != current:
                if current >= 0:
                    yield current, judged, lines, pieces
                current, judged, lines, pieces = task // STRIPE, 0, 0, []
            judged += read
            if pairs:
                lines += pairs
                pieces.append(view[_ROW.size :])
    if current >= 0:
        yield current, judged, lines, pieces


def _row(view: memoryview) -> tuple[int, int, int]:
    """A row's task id, judgments read and lines, once its layout is checked."""
    fields, id_length, task, first, judged, second, pairs, length = _ROW.unpack_from(view)
    body = len(view) - _ROW.size
    if (fields, id_length, first, second) != (4, 8, 4, 4) or length != (body if pairs else -1):
        raise RuntimeError("COPY sent a row this export does not know.")
    return task, judged, pairs


@contextmanager
def _session(raw: Any) -> Iterator[Any]:
    """``raw`` under ``SESSION``, restored after (Django's connection lives on)."""
    saved = {name: raw.execute(f"SHOW {name}").fetchone()[0] for name in SESSION}
    for name, value in SESSION.items():
        raw.execute("SELECT set_config(%s, %s, false)", (name, value))
    try:
        yield raw
    finally:
        if not raw.closed and raw.info.transaction_status in (0, 2):  # idle, in a transaction
            for name, value in saved.items():
                raw.execute("SELECT set_config(%s, %s, false)", (name, value))


def copied_pair_batches(
    *, fmt: str, context: ExportContext, progress: Progress | None = None
) -> Iterator[CopiedBatch]:
    """The export's JSONL from the database, in order, in batches of at least
    ``EXPORT_BATCH_ROWS`` lines; ``progress(n)`` hears how many judgments were read, after each
    batch (inside a transaction only at the end: Django's connection is busy until then)."""
    query = pair_query(fmt=fmt, context=context)
    if connection.in_atomic_block:
        connection.ensure_connection()
        with _session(connection.connection) as raw:
            # Read whole before it is handed on: the caller may use the connection then.
            runs = list(_runs(raw, query, 0, 1))
        batches = list(_batched(iter(runs), None))
        if progress is not None:
            progress(sum(run[1] for run in runs))
        yield from batches
        return
    with ExitStack() as stack:
        yield from _batched(_merged(query, stack), progress)


def _batched(runs: Iterator[Run], progress: Progress | None) -> Iterator[CopiedBatch]:
    # Smaller batches than the Python path's: fewer bytes in flight between here and the
    # writer (the Parquet writer cuts its row groups to EXPORT_BATCH_ROWS all the same).
    size = max(1, min(settings.EXPORT_BATCH_ROWS, BATCH_LINES))
    pieces: list[memoryview] = []
    lines = read = 0
    for _, judged, count, run in runs:
        read += judged
        pieces += run
        lines += count
        if lines >= size:
            yield CopiedBatch(pieces, lines)
            pieces, lines = [], 0
            if progress is not None:
                progress(read)
    if lines:
        yield CopiedBatch(pieces, lines)
    if progress is not None:
        progress(read)


_END = None


def _merged(query: Query, stack: ExitStack) -> Iterator[Run]:
    """Every part's runs, each part read on a thread and connection of its own, merged in id
    order. On the way out (done, or the caller stopped reading) the threads are told to stop
    and the connections closed."""
    params = connection.get_connection_params()
    stop = threading.Event()
    queues: list[queue.Queue[Run | BaseException | None]] = [
        queue.Queue(maxsize=AHEAD) for _ in range(PARTS)
    ]

    def put(out: queue.Queue[Run | BaseException | None], item: Run | BaseException | None) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(part: int) -> None:
        out = queues[part]
        try:
            raw = connection.get_new_connection(params)
            try:
                raw.autocommit = True
                for name, value in SESSION.items():
                    raw.execute("SELECT set_config(%s, %s, false)", (name, value))
                for run in _runs(raw, query, part, PARTS):
                    if stop.is_set():
                        return
                    put(out, run)
            finally:
                raw.close()
        except BaseException as error:  # handed to the reader, which raises it
            put(out, error)
            return
        put(out, _END)

    pool = stack.enter_context(ThreadPoolExecutor(PARTS, "export-copy"))
    stack.callback(stop.set)  # runs first: the threads stop, then the pool is waited for
    for part in range(PARTS):
        pool.submit(read, part)
    heads: list[Run | None] = [_next(out) for out in queues]
    while any(head is not None for head in heads):
        part = min((h[0], i) for i, h in enumerate(heads) if h is not None)[1]
        yield heads[part]  # type: ignore[misc]
        heads[part] = _next(queues[part])


def _next(out: queue.Queue[Run | BaseException | None]) -> Run | None:
    item = out.get()
    if isinstance(item, BaseException):
        raise item
    return item
