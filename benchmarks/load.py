"""The annotation API under load: simulated annotators over real HTTP against gunicorn and
PostgreSQL, for a fixed number of tasks.

Each annotator is a thread with its own ``httpx`` client and token, looping lease → submit (now
and then skip) until the lease answers 204. The server is a real ``gunicorn`` process (4 workers
of 4 threads, as in production), on a database of its own (``bench_load``, dropped, recreated
and migrated each run; ``--database-url`` or ``BENCH_DATABASE_URL`` names another) and
``var/bench/load``. At the end the database is checked: every task at exactly its overlap target,
as many judgments as submits that answered 200, nobody judging a task twice, no 5xx, no lease
left. The table gives loops per second (a loop is one submitted judgment: its lease and its
submit), p50/p95/p99 latency per call, and the CPU gunicorn and PostgreSQL spent per loop.

DESIGN §10 target: at least 82 loops/s with 32 clients, lease p99 at most 500 ms, at most 18 ms
of server plus database CPU per loop. Run: ``python benchmarks/load.py --clients 50 --tasks 2000
--overlap 3``. ``tests/annotation/test_load.py`` runs the same code briefly in ``make test``.

This module is also the load driver the tests import (``gunicorn_serving``, ``round_seed``,
``annotator_tokens``, ``load_run``, ``load_problems``), so it imports nothing from ``tests`` and
sets Django up only when run as a script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, the package `benchmarks` is not on the path
    sys.path.insert(0, str(ROOT))

# The servers live in benchmarks/serving.py; the tests and benchmarks import them from here too.
from benchmarks.serving import (  # noqa: E402, F401
    Server,
    cpu_seconds_backends,
    cpu_seconds_gunicorn,
    gunicorn_serving,
    port_free,
    port_wait,
    workers_warm,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_load"
RESULTS = ROOT / "benchmarks" / "results"
NEXT = "/api/v1/tasks/next/"
CALLS = ("lease", "submit", "skip")
# Passes of every client until 204: a task one annotator skipped at the very end, after the
# others had left, is picked up by the next pass (see ``load_run``).
MAX_PASSES = 5
TARGET = {"loops_per_s": 82, "lease_p99_ms": 500, "cpu_ms_per_loop": 18}


# --- the data (Django must be set up) --------------------------------------------------------


def round_seed(
    *,
    tasks: int,
    overlap: int,
    k: int = 3,
    seed: int = 0,
    chars: tuple[int, int] | None = None,
) -> Any:
    """An open round of ``tasks`` tasks of ``k`` completions, opened the way an admin does
    (``round_open_from_imported``) from prompts and completions written in bulk. Texts are
    ~200-character prompts and ~300-character completions, or, with ``chars=(low, high)``,
    every prompt and every completion exactly a length drawn uniformly from that range."""
    from annotation.rounds import round_open_from_imported
    from feedback.models import Completion, PolicyVersion, Prompt, messages_hash

    rng = random.Random(seed)
    policy, _ = PolicyVersion.objects.get_or_create(
        name="load-model", defaults={"status": PolicyVersion.Status.EXTERNAL}
    )
    start = Prompt.objects.count()
    prompts = []
    for i in range(start, start + tasks):
        messages = [{"role": "user", "content": _sized(rng, 200, chars, prefix=f"{i}. ")}]
        prompts.append(Prompt(messages=messages, content_hash=messages_hash(messages)))
    prompts = Prompt.objects.bulk_create(prompts, batch_size=1000)
    Completion.objects.bulk_create(
        [
            Completion(
                prompt=p, policy_version=policy, sample_index=j, text=_sized(rng, 300, chars)
            )
            for p in prompts
            for j in range(k)
        ],
        batch_size=2000,
    )
    round_, left_out = round_open_from_imported(
        k=k, overlap=overlap, prompt_ids=[p.pk for p in prompts], seed=seed
    )
    assert left_out == 0, f"{left_out} prompts left out of the load round"
    return round_


def _sized(
    rng: random.Random, about: int, chars: tuple[int, int] | None, *, prefix: str = ""
) -> str:
    """A text of about ``about`` characters, or of exactly a length drawn from ``chars``
    (``prefix`` included: it keeps prompts distinct)."""
    from benchmarks._seed import _text

    if chars is None:
        return prefix + _text(rng, about)
    length = rng.randint(*chars)
    return (prefix + _text(rng, length))[:length]


def annotator_tokens(n: int, *, prefix: str = "load") -> list[str]:
    """``n`` new annotators, each with an API token (no password: hashing 50 would take
    longer than the load); returns the tokens."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from feedback.platform.roles import Role

    user_model = get_user_model()
    first = user_model.objects.count()
    users = [user_model(username=f"{prefix}-{first + i}") for i in range(n)]
    for user in users:
        user.set_unusable_password()
    users = user_model.objects.bulk_create(users)
    group, _ = Group.objects.get_or_create(name=Role.ANNOTATOR.value)
    group.user_set.add(*users)
    tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
    return [t.key for t in tokens]


# --- the load --------------------------------------------------------------------------------


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """The count and p50/p95/p99, in milliseconds, of at least two latencies in seconds."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"n": len(seconds), "p50": 1000 * cuts[49], "p95": 1000 * cuts[94],
            "p99": 1000 * cuts[98]}  # fmt: skip


@dataclass
class Tally:
    """What one client saw; merged into a ``LoadReport`` when its thread ends."""

    statuses: Counter[int] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CALLS})
    submitted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.statuses.update(other.statuses)
        for call in CALLS:
            self.latencies[call] += other.latencies[call]
        self.submitted += other.submitted
        self.errors += other.errors


@dataclass
class LoadReport(Tally):
    clients: int = 0
    passes: int = 0
    seconds: float = 0.0

    @property
    def loops_per_s(self) -> float:
        return len(self.submitted) / self.seconds if self.seconds else 0.0

    def percentiles_ms(self) -> dict[str, dict[str, float]]:
        """p50/p95/p99 per call, in milliseconds (calls made fewer than twice are left out)."""
        return {call: percentiles_ms(v) for call, v in self.latencies.items() if len(v) >= 2}

    def summary(self) -> str:
        statuses = dict(sorted(self.statuses.items()))
        lines = [
            f"{len(self.submitted)} lease+submit loops by {self.clients} clients in "
            f"{self.seconds:.1f} s = {self.loops_per_s:.1f} loops/s "
            f"(statuses {statuses}, {self.passes} passes)"
        ]
        for call, p in self.percentiles_ms().items():
            lines.append(
                f"  {call:6} n={p['n']:<6} p50 {p['p50']:7.1f} ms  p95 {p['p95']:7.1f} ms  "
                f"p99 {p['p99']:7.1f} ms"
            )
        return "\n".join(lines)


def annotator_body(task: dict[str, Any]) -> dict[str, Any]:
    """A valid judgment for a leased task: rank in shown order, score every axis."""
    ids = [c["id"] for c in task["completions"]]
    axes = [axis["key"] for axis in task["rubric"]["axes"]]
    return {
        "ranking": [[cid] for cid in ids],
        "scores": {str(cid): {axis: 7 - min(i, 6) for axis in axes} for i, cid in enumerate(ids)},
        "strength": "better",
        "flags": [],
        "rationale": "first is clearly right",
        "time_spent_ms": 1234,
    }


def _timed(client: httpx.Client, tally: Tally, call: str, url: str, body: Any) -> httpx.Response:
    began = time.perf_counter()
    response = client.post(url, json=body)
    tally.latencies[call].append(time.perf_counter() - began)
    tally.statuses[response.status_code] += 1
    return response


class Budget:
    """Loops left to share among the clients, for a run of a fixed length on a task table too
    large to finish."""

    def __init__(self, loops: int) -> None:
        self.left = loops
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def annotator_loop(
    client: httpx.Client, *, rng: random.Random, skip_rate: float, budget: Budget | None = None
) -> Tally:
    """Lease and submit (or skip) until 204 or the shared budget is spent; any other answer, or
    a transport error, ends this client with the error recorded."""
    tally = Tally()
    try:
        while budget is None or budget.take():
            response = _timed(client, tally, "lease", NEXT, None)
            if response.status_code == 204:
                return tally
            if response.status_code != 200:
                tally.errors.append(f"lease {response.status_code}: {response.text[:300]}")
                return tally
            task = response.json()
            assignment = task["assignment"]
            if rng.random() < skip_rate:
                url = f"/api/v1/assignments/{assignment}/skip/"
                response = _timed(client, tally, "skip", url, {"reason": "load test skip"})
            else:
                url = f"/api/v1/assignments/{assignment}/submit/"
                response = _timed(client, tally, "submit", url, annotator_body(task))
                if response.status_code == 200:
                    tally.submitted.append(response.json()["id"])
            if response.status_code != 200:
                tally.errors.append(f"{url} {response.status_code}: {response.text[:300]}")
                return tally
    except httpx.HTTPError as exc:
        tally.errors.append(f"transport: {exc!r}")
    return tally


def load_run(
    *,
    base_url: str,
    tokens: list[str],
    skip_rate: float = 0.02,
    timeout: float = 60.0,
    loops: int | None = None,
) -> LoadReport:
    """Every token's client in its own thread, all at once, until each has been answered 204
    (or, with ``loops``, until that many leases were made between them).

    A client that got 204 has left; if someone skips a task after every other annotator left,
    nobody would take it. So the clients run in passes, again after a pass with a skip, until a
    pass submits nothing."""
    report = LoadReport(clients=len(tokens))
    lock = threading.Lock()
    clients = [
        httpx.Client(base_url=base_url, timeout=timeout, headers={"Authorization": f"Token {t}"})
        for t in tokens
    ]
    rngs = [random.Random(i) for i in range(len(tokens))]

    budget = None if loops is None else Budget(loops)

    def run(i: int, sink: Tally) -> None:
        tally = annotator_loop(clients[i], rng=rngs[i], skip_rate=skip_rate, budget=budget)
        with lock:
            sink.merge(tally)

    began = time.perf_counter()
    try:
        for _ in range(MAX_PASSES):
            this_pass = Tally()
            threads = [
                threading.Thread(target=run, args=(i, this_pass)) for i in range(len(clients))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report.merge(this_pass)
            report.passes += 1
            # Only a skip gives a slot back to the pool after its last taker may have left.
            if (
                budget is not None
                or not (this_pass.submitted and this_pass.latencies["skip"])
                or this_pass.errors
            ):
                break
    finally:
        report.seconds = time.perf_counter() - began
        for client in clients:
            client.close()
    return report


def load_problems(report: LoadReport, *, round_: Any, complete: bool = True) -> list[str]:
    """What is wrong with the round after a load; empty when every invariant holds. With
    ``complete=False`` (a run of a fixed number of loops on a larger round) tasks need only be
    at or under their overlap target, not at it."""
    from django.db.models import Count, F

    from annotation.models import Assignment, ComparisonTask, Judgment

    problems = [f"client error: {e}" for e in report.errors[:20]]
    if server_errors := {s: n for s, n in report.statuses.items() if s >= 500}:
        problems.append(f"5xx answers: {server_errors}")
    tasks = ComparisonTask.objects.filter(round=round_)
    if complete and (off := tasks.exclude(submitted_count=F("overlap")).count()):
        problems.append(f"{off} of {tasks.count()} tasks not at exactly their overlap target")
    if not complete and (over := tasks.filter(submitted_count__gt=F("overlap")).count()):
        problems.append(f"{over} tasks over their overlap target")
    if leased := tasks.exclude(leased_count=0).count():
        problems.append(f"{leased} tasks still count leases")
    judgments = Judgment.objects.filter(task__round=round_)
    stored = judgments.count()
    if not stored == len(report.submitted) == len(set(report.submitted)):
        problems.append(f"{stored} judgments stored, {len(report.submitted)} submits answered "
                        f"200 ({len(set(report.submitted))} distinct)")  # fmt: skip
    if stored != judgments.filter(pk__in=report.submitted).count():
        problems.append("stored judgments differ from those the submits returned")
    twice = judgments.values("task", "annotator").annotate(n=Count("pk")).filter(n__gt=1)
    if twice.exists():
        problems.append(f"{twice.count()} (task, annotator) pairs judged more than once")
    per_task = tasks.annotate(n=Count("judgments")).exclude(n=F("submitted_count"))
    if per_task.exists():
        problems.append(f"{per_task.count()} tasks whose submitted_count is not their judgments")
    live = Assignment.objects.filter(task__round=round_, status=Assignment.Status.LEASED)
    if live.exists():
        problems.append(f"{live.count()} assignments still leased")
    return problems


# --- the benchmark ---------------------------------------------------------------------------


def main() -> None:
    args = _arguments()
    sys.path.insert(0, str(ROOT))
    var_dir = ROOT / "var" / "bench" / "load"
    round_, tokens = _database_prepare(args, var_dir=var_dir)
    report, server_version, cpu_seconds = _measure(args, tokens=tokens, var_dir=var_dir)
    problems = load_problems(report, round_=round_)
    loops = len(report.submitted)
    cpu_ms = {
        side: None if seconds is None or not loops else 1000 * seconds / loops
        for side, seconds in cpu_seconds.items()
    }
    percentiles = report.percentiles_ms()
    _print_table(
        report, clients=args.clients, percentiles=percentiles, cpu_ms=cpu_ms, problems=problems
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "postgresql": server_version},
        "loops": loops, "seconds": report.seconds, "loops_per_s": report.loops_per_s,
        "passes": report.passes, "statuses": dict(report.statuses),
        "latency_ms": percentiles, "cpu_ms_per_loop": cpu_ms, "targets": TARGET,
        "problems": problems,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.json}")
    if problems:
        raise SystemExit(1)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))  # fmt: skip
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--k", type=int, default=3, help="completions per task")
    parser.add_argument("--skip-rate", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", type=Path, default=RESULTS / "load.json")
    return parser.parse_args()


def _database_prepare(args: argparse.Namespace, *, var_dir: Path) -> tuple[Any, list[str]]:
    """A fresh benchmark database, migrated, with the round and one token per annotator."""
    import logging

    from benchmarks.export import database_ensure  # before VAR_DIR: it sets export's own

    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = args.database_url
    database_ensure(args.database_url, reset=True)
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    round_ = round_seed(tasks=args.tasks, overlap=args.overlap, k=args.k)
    tokens = annotator_tokens(args.clients)
    connections.close_all()
    print(f"{args.tasks} tasks (K={args.k}, overlap {args.overlap}) and {args.clients} "
          f"annotators seeded in {time.perf_counter() - began:.1f} s", flush=True)  # fmt: skip
    return round_, tokens


def _measure(
    args: argparse.Namespace, *, tokens: list[str], var_dir: Path
) -> tuple[LoadReport, str, dict[str, float | None]]:
    """The load against a fresh gunicorn; its report, PostgreSQL's version, and the CPU seconds
    gunicorn and PostgreSQL spent on it (None where they cannot be read)."""
    import psycopg

    began = time.perf_counter()
    with (
        gunicorn_serving(database_url=args.database_url, log=var_dir / "gunicorn.log",
                         workers=args.workers, threads=args.threads) as server,
        psycopg.connect(args.database_url, autocommit=True) as conn,
    ):  # fmt: skip
        print(f"gunicorn serving in {time.perf_counter() - began:.1f} s", flush=True)
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        app_before = cpu_seconds_gunicorn(server.process)
        db_before = cpu_seconds_backends(conn)  # the warm-up's anonymous 401s open none
        report = load_run(base_url=server.base_url, tokens=tokens, skip_rate=args.skip_rate)
        app_after = cpu_seconds_gunicorn(server.process)
        db_after = cpu_seconds_backends(conn)
    cpu_seconds = {
        "gunicorn": None if app_before is None or app_after is None else app_after - app_before,
        "postgres": None if db_before is None or db_after is None else db_after - db_before,
    }
    return report, server_version, cpu_seconds


def _print_table(
    report: LoadReport,
    *,
    clients: int,
    percentiles: dict[str, dict[str, float]],
    cpu_ms: dict[str, float | None],
    problems: list[str],
) -> None:
    print()
    print(f"{'call':8} {'n':>7} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    for call, p in percentiles.items():
        print(f"{call:8} {p['n']:>7} {p['p50']:9.1f} {p['p95']:9.1f} {p['p99']:9.1f}")
    print(
        f"{len(report.submitted)} loops by {clients} clients in {report.seconds:.1f} s: "
        f"{report.loops_per_s:.1f} loops/s; statuses {dict(sorted(report.statuses.items()))}"
    )
    if None not in cpu_ms.values():
        print(
            f"CPU per loop: gunicorn {cpu_ms['gunicorn']:.1f} ms + PostgreSQL "
            f"{cpu_ms['postgres']:.1f} ms = {cpu_ms['gunicorn'] + cpu_ms['postgres']:.1f} ms"
        )
    print(
        f"target (DESIGN §10, at 32 clients): >= {TARGET['loops_per_s']} loops/s, lease p99 "
        f"<= {TARGET['lease_p99_ms']} ms, <= {TARGET['cpu_ms_per_loop']} ms CPU per loop"
    )
    print("invariants: " + ("all hold" if not problems else "; ".join(problems)))


if __name__ == "__main__":
    main()
