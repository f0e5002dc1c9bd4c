"""Seed a benchmark database with judged rounds, fast: PostgreSQL COPY, not the ORM.

The data has the shape the API would leave behind: a few closed rounds, each served by its own
policy version, K=4 completions per task in a fixed shuffled order, overlap 3 (three different
annotators per task), one submitted assignment per judgment, and judgments under the default 3H
rubric with untied rankings (so C(4, 2) = 6 preference pairs each), per-axis scores that agree
with the ranking up to noise, a strength label, now and then a flag or a rationale. Texts have
realistic sizes (prompts ~200 characters, completions ~300) with some newlines, quotes and
non-ASCII characters, so JSON escaping is exercised as it would be on real data.

Seeding is recorded in a small table (``bench_seed``): when it says the database already holds
the requested number of pairs, nothing is written, so reruns start measuring at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from tqdm import tqdm

K = 4
OVERLAP = 3
ROUNDS = 4
ANNOTATORS = 24
PAIRS_PER_JUDGMENT = K * (K - 1) // 2
TASKS_PER_CHUNK = 2000  # one transaction each: bounded deferred-FK queues and a moving progress bar

VOCABULARY = (
    "the of and to in is that it for on with as was be by this are or from at an which but not "
    "have has had were can will would could should may might one two three first second value "
    "answer question result because therefore however example number capital city river country "
    "water energy system model data error rate step method reason simple clear correct wrong "
    "about between before after during under over again further then once here there when where "
    "why how all any both each few more most other some such only own same so than too very just "
    "explain describe compute sum product difference divide multiply minute hour year history "
    "science language people world time way day thing man woman child life hand part place case "
    "week company group problem fact être café naïve résumé"
)
WORDS = VOCABULARY.split()
PUNCTUATION = (".", ".", ".", ",", ",", "?", "!", ";", ":")
EXTRAS = (' "quoted" ', " — ", "\n\n", " 'single' ", " (aside) ", " 42% ", " \\ ", " “curly” ")
STRENGTHS = ("significantly_better", "better", "slightly_better", "negligibly_better")
FLAGS = ("unsafe", "pii", "gibberish", "prompt_issue", "all_bad")
AXES = ("helpful", "honest", "harmless")
TABLES = (
    "annotation_judgment",
    "annotation_assignment",
    "annotation_taskcompletion",
    "annotation_comparisontask",
    "annotation_round",
    "feedback_completion",
    "feedback_prompt",
    "feedback_policyversion",
    "auth_user",
)
IDENTITY_TABLES = (
    "auth_user",
    "feedback_policyversion",
    "feedback_prompt",
    "feedback_completion",
    "annotation_round",
    "annotation_comparisontask",
    "annotation_taskcompletion",
)


@dataclass(frozen=True)
class SeedReport:
    pairs: int
    judgments: int
    tasks: int
    seconds: float
    reused: bool


def _text(rng: random.Random, chars: int) -> str:
    """Words until about ``chars`` characters, in sentences, with the odd escape-worthy extra."""
    parts: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
        sentence = sentence[0].upper() + sentence[1:] + rng.choice(PUNCTUATION)
        if rng.random() < 0.15:
            sentence += rng.choice(EXTRAS)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _canonical(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def seeded_pairs(conn: psycopg.Connection) -> int | None:
    """The pair count the database was last seeded with, or None when it was not (or partly)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('bench_seed') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT pairs, judgments FROM bench_seed")
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("SELECT count(*) FROM annotation_judgment")
        return row[0] if cur.fetchone()[0] == row[1] else None


def seed_preference_pairs(*, conninfo: str, pairs: int, seed: int = 0) -> SeedReport:
    """Make the database hold ``pairs`` preference pairs (rounded up to whole judgments),
    replacing whatever benchmark data it held; a no-op when it already holds that many."""
    judgments = math.ceil(pairs / PAIRS_PER_JUDGMENT)
    tasks = math.ceil(judgments / OVERLAP)
    with psycopg.connect(conninfo) as conn:
        if seeded_pairs(conn) == judgments * PAIRS_PER_JUDGMENT:
            return SeedReport(judgments * PAIRS_PER_JUDGMENT, judgments, tasks, 0.0, True)
        began = time.perf_counter()
        rng = random.Random(seed)
        now = datetime.now(UTC)
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_seed")
            cur.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
            cur.execute("SELECT id FROM annotation_rubric WHERE name = '3H' AND version = 1")
            rubric_id = cur.fetchone()[0]
            _seed_people_and_rounds(cur, rubric_id=rubric_id, now=now)
        conn.commit()

        progress = tqdm(total=judgments * PAIRS_PER_JUDGMENT, unit="pair", desc="seeding")
        judgment_index = 0
        for first in range(0, tasks, TASKS_PER_CHUNK):
            count = min(TASKS_PER_CHUNK, tasks - first)
            with conn.cursor() as cur:
                written = _seed_chunk(
                    cur, rng, first_task=first, count=count, tasks=tasks,
                    judgments_left=judgments - judgment_index, rubric_id=rubric_id, now=now,
                )  # fmt: skip
            conn.commit()
            judgment_index += written
            progress.update(written * PAIRS_PER_JUDGMENT)
        progress.close()

        with conn.cursor() as cur:
            for table in IDENTITY_TABLES:
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            cur.execute(
                "CREATE TABLE bench_seed (pairs bigint, judgments bigint, seconds float8, "
                "seeded_at timestamptz)"
            )
            seconds = time.perf_counter() - began
            cur.execute(
                "INSERT INTO bench_seed VALUES (%s, %s, %s, now())",
                (judgments * PAIRS_PER_JUDGMENT, judgments, seconds),
            )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")  # visibility map and statistics, as a live database has
        return SeedReport(
            judgments * PAIRS_PER_JUDGMENT, judgments, tasks, time.perf_counter() - began, False
        )


def _seed_people_and_rounds(cur: psycopg.Cursor, *, rubric_id: int, now: datetime) -> None:
    with cur.copy(
        "COPY auth_user (id, password, is_superuser, username, first_name, last_name, email, "
        "is_staff, is_active, date_joined) FROM STDIN"
    ) as copy:
        for a in range(1, ANNOTATORS + 1):
            copy.write_row((a, "!bench", False, f"bench-annotator-{a:02d}", "", "", "", False,
                            True, now))  # fmt: skip
    with cur.copy(
        "COPY feedback_policyversion (id, name, base_model, adapter_path, status, created_at, "
        "parent_id, revision, model_info) FROM STDIN"
    ) as copy:
        for r in range(1, ROUNDS + 1):
            status = "active" if r == ROUNDS else "retired"
            copy.write_row((r, f"bench-policy-v{r}", "bench/tiny-llama", f"policies/v{r}", status,
                            now, r - 1 if r > 1 else None, "", "{}"))  # fmt: skip
    with cur.copy(
        "COPY annotation_round (id, number, source, k, overlap, seed, status, created_at, "
        "closed_at, policy_version_id, rubric_id, backend, generation_error, progress_done, "
        "prompt_ids, prompts_skipped, sampling, gold_count, gold_rate, generation_attempts, "
        "leaderboard_enabled, leaderboard_names, priority) FROM STDIN"
    ) as copy:
        for r in range(1, ROUNDS + 1):
            copy.write_row((r, r, "policy", K, OVERLAP, r, "closed", now, now, r, rubric_id,
                            "transformers", "", 0, "[]", 0, '{"temperature": 0.7}', 0,
                            0.0, 1, False, False, 0))  # fmt: skip


@dataclass
class _ChunkRows:
    """The rows of one chunk, table by table, in the order ``_chunk_copy`` writes them."""

    prompts: list[tuple] = field(default_factory=list)
    completions: list[tuple] = field(default_factory=list)
    tasks: list[tuple] = field(default_factory=list)
    slots: list[tuple] = field(default_factory=list)
    assignments: list[tuple] = field(default_factory=list)
    judgments: list[tuple] = field(default_factory=list)


def _seed_chunk(
    cur: psycopg.Cursor,
    rng: random.Random,
    *,
    first_task: int,
    count: int,
    tasks: int,
    judgments_left: int,
    rubric_id: int,
    now: datetime,
) -> int:
    """Tasks ``first_task`` … ``first_task + count - 1`` (0-based) with everything they hold;
    returns how many judgments it wrote. Ids are 1-based and derived from the task index."""
    rows = _ChunkRows()
    start = now - timedelta(seconds=OVERLAP * tasks * 2 + 60)
    for t in range(first_task, first_task + count):
        task_id = t + 1
        round_id = 1 + t * ROUNDS // tasks
        ids, quality = _task_seed(rows, rng, t, round_id=round_id, now=now)
        judged = min(OVERLAP, judgments_left - (t - first_task) * OVERLAP)
        for nth, annotator in enumerate(rng.sample(range(1, ANNOTATORS + 1), judged)):
            # Interleaved in time (every task's first judgment, then the seconds, …), so the
            # export's (created_at, id) order does not follow the table's physical order.
            created = start + timedelta(seconds=(nth * tasks + t) * 2 + rng.random())
            _judgment_seed(rows, rng, task_id=task_id, ids=ids, quality=quality,
                           annotator=annotator, created=created, rubric_id=rubric_id)  # fmt: skip
        # Closed rounds' tasks are out of the distributor's index (round_open false).
        rows.tasks.append((task_id, OVERLAP, judged, 0, now, task_id, round_id, 0, False))
    _chunk_copy(cur, rows)
    return len(rows.judgments)


def _task_seed(
    rows: _ChunkRows, rng: random.Random, t: int, *, round_id: int, now: datetime
) -> tuple[list[int], dict[int, float]]:
    """Task ``t``'s prompt, its K completions and the order they are shown in; returns the
    completions' ids and the hidden quality each judgment of them sees through noise."""
    task_id = t + 1
    turns = [{"role": "user", "content": f"{t}. " + _text(rng, rng.randint(120, 280))}]
    if rng.random() < 0.15:
        turns[:0] = [
            {"role": "user", "content": _text(rng, 60)},
            {"role": "assistant", "content": _text(rng, 80)},
        ]
    content_hash = hashlib.sha256(_canonical(turns).encode()).hexdigest()
    rows.prompts.append((task_id, json.dumps(turns, ensure_ascii=False), content_hash,
                         "bench", "[]", False, now))  # fmt: skip
    ids = [t * K + i + 1 for i in range(K)]
    quality = {cid: rng.random() for cid in ids}
    for i, cid in enumerate(ids):
        text = _text(rng, int(rng.triangular(100, 500, 250)))
        rows.completions.append((cid, i, text, '{"temperature": 0.7, "top_p": 0.95}', "stop",
                                 70, len(text) // 4, rng.randint(200, 4000), now, round_id,
                                 task_id))  # fmt: skip
    shown = rng.sample(ids, K)
    rows.slots.extend((t * K + p + 1, p, cid, task_id) for p, cid in enumerate(shown))
    return ids, quality


def _judgment_seed(
    rows: _ChunkRows,
    rng: random.Random,
    *,
    task_id: int,
    ids: list[int],
    quality: dict[int, float],
    annotator: int,
    created: datetime,
    rubric_id: int,
) -> None:
    """One annotator's submitted assignment and judgment of a task: a ranking and scores that
    follow the completions' quality up to noise, a strength from the top two's gap, now and then
    a flag or a rationale."""
    seen = {cid: q + rng.gauss(0, 0.15) for cid, q in quality.items()}
    order = sorted(ids, key=lambda cid: -seen[cid])
    scores = {
        str(cid): {
            axis: min(7, max(1, round(1 + 6 * seen[cid] + rng.gauss(0, 0.7)))) for axis in AXES
        }
        for cid in ids
    }
    gap = seen[order[0]] - seen[order[1]]
    strength = STRENGTHS[0 if gap > 0.5 else 1 if gap > 0.25 else 2 if gap > 0.1 else 3]
    flags = [rng.choice(FLAGS)] if rng.random() < 0.03 else []
    rationale = _text(rng, rng.randint(60, 200)) if rng.random() < 0.3 else ""
    assignment_id = _uuid(rng)
    rows.assignments.append((assignment_id, "submitted", created - timedelta(minutes=2),
                             created + timedelta(minutes=28), created, "", annotator,
                             task_id))  # fmt: skip
    rows.judgments.append((_uuid(rng), json.dumps([[cid] for cid in order]),
                           json.dumps(scores), strength, json.dumps(flags), rationale,
                           rng.randint(5_000, 180_000), f"{rng.getrandbits(256):064x}",
                           created, annotator, assignment_id, task_id, rubric_id))  # fmt: skip


def _chunk_copy(cur: psycopg.Cursor, rows: _ChunkRows) -> None:
    _copy(cur, "feedback_prompt (id, messages, content_hash, source, tags, safety, created_at)",
          rows.prompts)  # fmt: skip
    _copy(cur, "feedback_completion (id, sample_index, text, sampling_params, finish_reason, "
          "prompt_tokens, completion_tokens, latency_ms, created_at, policy_version_id, "
          "prompt_id)", rows.completions)  # fmt: skip
    _copy(cur, "annotation_comparisontask (id, overlap, submitted_count, leased_count, "
          "created_at, prompt_id, round_id, priority, round_open)", rows.tasks)  # fmt: skip
    _copy(cur, "annotation_taskcompletion (id, position, completion_id, task_id)", rows.slots)
    _copy(cur, "annotation_assignment (id, status, leased_at, lease_expires_at, finished_at, "
          "skip_reason, annotator_id, task_id)", rows.assignments)  # fmt: skip
    _copy(cur, "annotation_judgment (id, ranking, scores, strength, flags, rationale, "
          "time_spent_ms, body_sha256, created_at, annotator_id, assignment_id, task_id, "
          "rubric_id)", rows.judgments)  # fmt: skip


def _copy(cur: psycopg.Cursor, target: str, rows: list[tuple]) -> None:
    with cur.copy(f"COPY {target} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
