"""Annotation API: the lease-and-submit loop at 1, 8 and 32 concurrent clients over HTTP against
gunicorn and PostgreSQL, against a baseline served by the same server.

The default workload is the one a deployment sees and that issue 19's independent comparison
ran (``WORKLOADS["deployment"]``): for every run a fresh round of 2,000 imported prompts of
200-400 characters with K = 4 completions of 200-400 characters each, overlap 1; each client count
its own distinct annotators, one token each, one client each; every submit a full ranking with 3H
scores for all four completions, a strength and time on task (``load.annotator_body``); gunicorn
2 workers x 8 threads (gthread) on PostgreSQL. The lease's rate limit stays on, raised to
``THROTTLE_LEASE=1000/s`` so that it never refuses a client but still does its work (the advisory
lock, the read and the insert of the sliding log) on every lease, as in a deployment. A run is a
fixed number of loops shared by the clients (``load_run(loops=...)``); then the round is closed.

``--workload previous`` runs what this benchmark measured before issue 19 (K = 3, overlap 3 on a
round of loops/3 tasks run until it is empty, shorter texts, 4 workers x 4 threads, the rate limit
off), for comparing the two in one run; ``docs/benchmarks.md`` says why it was easier.

The baseline is two minimal Django views that each make one indexed query
(``benchmarks/baseline_urls.py``): a read and a write per loop, the same number of loops, the
same clients. Runs alternate (platform, baseline, platform, ...) for ``--repeat`` repetitions at
each client count; the table gives the median loops per second with the range, the ratio to the
baseline, p50/p95/p99 per call, CPU per loop (gunicorn's processes plus the PostgreSQL backends
serving them), and the over-assignment and lost-judgment counts, which must be zero.

Targets (DESIGN §10, issue 19), on this 2-core machine: at least 82 loops/s at 32 clients and 40
at one, lease p99 at most 250 ms at 32 clients, at most 18 ms of CPU per loop, at least half the
baseline's loops/s. Run: ``make bench`` (``QUICK=1``: fewer loops, one repetition), or
``python benchmarks/annotation_api.py --clients 1,8,32 --repeat 3``.

It uses a database of its own (``bench_api``, dropped and migrated each run) and
``var/bench/annotation_api``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import (  # noqa: E402
    Tally,
    annotator_tokens,
    cpu_seconds_backends,
    cpu_seconds_gunicorn,
    gunicorn_serving,
    load_problems,
    load_run,
    percentiles_ms,
    round_seed,
)
from benchmarks.report import quick, results_write, spread, verdict  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_api"
TARGET = {"loops_per_s": 82, "loops_per_s_one_client": 40, "lease_p99_ms": 250,
          "cpu_ms_per_loop": 18, "ratio_to_baseline": 0.5}  # fmt: skip


@dataclass(frozen=True)
class Workload:
    """What a run serves and how: the round (``tasks`` None: loops / overlap, run until empty),
    the texts (``chars`` None: ~200-character prompts, ~300-character completions), the server
    and the lease's rate limit ("" turns it off)."""

    k: int
    overlap: int
    tasks: int | None
    chars: tuple[int, int] | None
    workers: int
    threads: int
    throttle_lease: str
    fresh_annotators_per_count: bool


WORKLOADS = {
    "deployment": Workload(k=4, overlap=1, tasks=2000, chars=(200, 400), workers=2, threads=8,
                           throttle_lease="1000/s", fresh_annotators_per_count=True),
    "previous": Workload(k=3, overlap=3, tasks=None, chars=None, workers=4, threads=4,
                         throttle_lease="", fresh_annotators_per_count=False),
}  # fmt: skip


def baseline_run(*, base_url: str, clients: int, loops: int, task_ids: list[int]) -> Tally:
    """``clients`` threads share ``loops`` loops of a read and a write of a random task."""
    left = [loops]
    lock = threading.Lock()
    total = Tally()
    total.latencies = {}

    def one(seed: int) -> None:
        rng = random.Random(seed)
        tally = Tally()
        tally.latencies = {"read": [], "write": []}
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while True:
                with lock:
                    if left[0] == 0:
                        break
                    left[0] -= 1
                task = rng.choice(task_ids)
                for call in ("read", "write"):
                    began = time.perf_counter()
                    response = client.post(f"/bench/baseline/{call}/{task}/")
                    tally.latencies[call].append(time.perf_counter() - began)
                    tally.statuses[response.status_code] += 1
                tally.submitted.append("loop")
        with lock:
            total.statuses.update(tally.statuses)
            for call, values in tally.latencies.items():
                total.latencies.setdefault(call, []).extend(values)
            total.submitted += tally.submitted

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total


def platform_once(
    *, server: Any, conn: Any, tokens: list[str], loops: int, seed: int, workload: Workload
) -> dict:
    from annotation.models import ComparisonTask, Judgment
    from annotation.rounds import round_close

    # One client cannot judge a task twice: overlap 3 needs three clients.
    overlap = min(workload.overlap, len(tokens))
    tasks = max(workload.tasks, loops) if workload.tasks else loops // overlap
    round_ = round_seed(tasks=tasks, overlap=overlap, k=workload.k, seed=seed,
                        chars=workload.chars)  # fmt: skip
    # A round run until empty ends with its clients' 204s; a larger one by a shared budget.
    budget = loops if workload.tasks else None
    app_before, db_before = cpu_seconds_gunicorn(server.process), cpu_seconds_backends(conn)
    report = load_run(base_url=server.base_url, tokens=tokens, skip_rate=0.0, loops=budget)
    app_after, db_after = cpu_seconds_gunicorn(server.process), cpu_seconds_backends(conn)
    problems = load_problems(report, round_=round_, complete=budget is None)
    round_close(round_id=round_.pk)  # the next run's round is the only one open
    tasks = ComparisonTask.objects.filter(round=round_)
    over = sum(1 for t in tasks.only("submitted_count", "overlap") if t.submitted_count > t.overlap)
    stored = Judgment.objects.filter(task__round=round_).count()
    n = len(report.submitted)
    cpu = None
    if None not in (app_before, app_after, db_before, db_after) and n:
        cpu = 1000 * ((app_after - app_before) + (db_after - db_before)) / n
    return {
        "loops_per_s": report.loops_per_s,
        "latency_ms": report.percentiles_ms(),
        "cpu_ms_per_loop": cpu,
        "over_assigned_tasks": over,
        "lost_judgments": n - stored if n >= stored else 0,
        "phantom_judgments": stored - n if stored > n else 0,
        "server_errors": sum(c for s, c in report.statuses.items() if s >= 500),
        "problems": problems,
        "task_ids": list(tasks.values_list("pk", flat=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_API_DATABASE_URL", DEFAULT_URL))  # fmt: skip
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--repeat", type=int, default=1 if quick() else 3)
    parser.add_argument("--loops", type=int, default=None,
                        help="loops per run per client count (default: 40 a client, at least "
                             "150; 20 and 60 under QUICK=1)")  # fmt: skip
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="deployment",
                        help="what to serve (see the module's doc)")  # fmt: skip
    parser.add_argument("--name", default="annotation_api",
                        help="results/<name>.json to write (the results page reads "
                             "annotation_api)")  # fmt: skip
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]
    counts = [int(c) for c in args.clients.split(",")]
    var_dir = ROOT / "var" / "bench" / "annotation_api"
    _database_prepare(args.database_url, var_dir=var_dir)
    results = _measure(args, counts=counts, workload=workload, var_dir=var_dir)
    _print_table(results)
    targets = targets_check(results)
    for line in targets["lines"]:
        print(line)
    command = (f"python benchmarks/annotation_api.py --clients {args.clients} "
               f"--repeat {args.repeat} --workload {args.workload}")  # fmt: skip
    results_write(
        args.name,
        {"workload_name": args.workload, "workload": asdict(workload), "overlap":
         workload.overlap, "repeat": args.repeat, "targets": TARGET, "results": results,
         "verdicts": targets["verdicts"]},
        chart=lambda plt: _chart(plt, results, title=args.workload),
        command=command + (f" --loops {args.loops}" if args.loops else ""),
    )  # fmt: skip
    bad = [r for r in results.values() if r["over_assigned_tasks"] or r["lost_judgments"]]
    if bad:
        raise SystemExit("over-assignment or lost judgments: see the table")


def _database_prepare(database_url: str, *, var_dir: Path) -> None:
    """A fresh benchmark database, migrated."""
    import logging

    from benchmarks.export import database_ensure

    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.baseline_settings"
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = database_url
    database_ensure(database_url, reset=True)
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    connections.close_all()


def _measure(
    args: argparse.Namespace, *, counts: list[int], workload: Workload, var_dir: Path
) -> dict[str, Any]:
    """Per client count, the platform's loop and the baseline's, alternating, repeated."""
    import psycopg
    from django.db import connections

    results: dict[str, Any] = {}
    tokens = annotator_tokens(max(counts), prefix="api")
    env = {"DJANGO_SETTINGS_MODULE": "benchmarks.baseline_settings",
           "THROTTLE_LEASE": workload.throttle_lease}  # fmt: skip
    with (
        gunicorn_serving(database_url=args.database_url, log=var_dir / "gunicorn.log", env=env,
                         workers=workload.workers, threads=workload.threads,
                         worker_class="gthread") as server,
        psycopg.connect(args.database_url, autocommit=True) as conn,
    ):  # fmt: skip
        for clients in counts:
            if workload.fresh_annotators_per_count:
                tokens = annotator_tokens(clients, prefix=f"api{clients}")
            connections.close_all()
            per_client = 20 if quick() else 40
            loops = args.loops or max(60 if quick() else 150, per_client * clients)
            loops -= loops % workload.overlap
            platform_runs, baseline_runs = [], []
            for repeat in range(args.repeat):
                run = platform_once(server=server, conn=conn, tokens=tokens[:clients],
                                    loops=loops, seed=clients * 100 + repeat,
                                    workload=workload)  # fmt: skip
                connections.close_all()
                platform_runs.append(run)
                baseline_runs.append(_baseline_once(server, clients, loops, run.pop("task_ids")))
                print(f"{clients:>3} clients, run {repeat + 1}: platform "
                      f"{run['loops_per_s']:.1f} loops/s, baseline "
                      f"{baseline_runs[-1]['loops_per_s']:.1f} loops/s"
                      + (f"; problems: {run['problems']}" if run["problems"] else ""),
                      flush=True)  # fmt: skip
            results[str(clients)] = summarize(platform_runs, baseline_runs, loops)
    return results


def _baseline_once(server: Any, clients: int, loops: int, task_ids: list[int]) -> dict:
    began = time.perf_counter()
    tally = baseline_run(base_url=server.base_url, clients=clients, loops=loops,
                         task_ids=task_ids)  # fmt: skip
    seconds = time.perf_counter() - began
    return {
        "loops_per_s": len(tally.submitted) / seconds,
        "latency_ms": {c: percentiles_ms(v) for c, v in tally.latencies.items()},
        "server_errors": sum(c for s, c in tally.statuses.items() if s >= 500),
    }


def _print_table(results: dict[str, Any]) -> None:
    print()
    print(f"{'clients':>7} {'loops/s':>9} {'range':>13} {'baseline':>9} {'ratio':>6} "
          f"{'lease p50/p95/p99 ms':>22} {'submit p99':>10} {'CPU ms':>7} {'over':>5} "
          f"{'lost':>5}")  # fmt: skip
    for clients, r in results.items():
        lease, submit = r["lease_ms"], r["submit_ms"]
        cpu = "-" if r["cpu_ms_per_loop"] is None else f"{r['cpu_ms_per_loop']:.1f}"
        print(f"{clients:>7} {r['loops_per_s']['median']:9.1f} "
              f"{r['loops_per_s']['min']:6.1f}-{r['loops_per_s']['max']:<6.1f} "
              f"{r['baseline_loops_per_s']['median']:9.1f} {r['ratio_to_baseline']:6.2f} "
              f"{lease['p50']:6.0f}/{lease['p95']:6.0f}/{lease['p99']:6.0f}   "
              f"{submit['p99']:10.0f} {cpu:>7} {r['over_assigned_tasks']:5d} "
              f"{r['lost_judgments']:5d}")  # fmt: skip


def _chart(plt: Any, results: dict[str, Any], *, title: str) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = list(range(len(results)))
    labels = list(results)
    left.bar([x - 0.2 for x in xs], [r["loops_per_s"]["median"] for r in results.values()],
             width=0.4, label="platform lease+submit")  # fmt: skip
    left.bar([x + 0.2 for x in xs],
             [r["baseline_loops_per_s"]["median"] for r in results.values()],
             width=0.4, label="baseline: 2 one-query views")  # fmt: skip
    left.axhline(TARGET["loops_per_s"], color="grey", linestyle="--", label="target at 32")
    left.set_xticks(xs, labels)
    left.set_xlabel("concurrent clients")
    left.set_ylabel("loops per second (median)")
    left.legend(fontsize=8)
    for key in ("p50", "p95", "p99"):
        right.plot(xs, [r["lease_ms"][key] for r in results.values()], marker="o",
                   label=f"lease {key}")  # fmt: skip
    right.plot(xs, [r["submit_ms"]["p99"] for r in results.values()], marker="s",
               label="submit p99")  # fmt: skip
    right.set_xticks(xs, labels)
    right.axhline(TARGET["lease_p99_ms"], color="grey", linestyle="--", label="p99 target")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency (ms)")
    right.legend(fontsize=8)
    figure.suptitle(f"Annotation API: gunicorn + PostgreSQL ({title} workload)")
    return figure


def summarize(platform_runs: list[dict], baseline_runs: list[dict], loops: int) -> dict:
    import statistics

    def median_of(runs: list[dict], call: str, key: str) -> float:
        return statistics.median(r["latency_ms"][call][key] for r in runs)

    rates = [r["loops_per_s"] for r in platform_runs]
    base = [r["loops_per_s"] for r in baseline_runs]
    cpus = [r["cpu_ms_per_loop"] for r in platform_runs if r["cpu_ms_per_loop"] is not None]
    return {
        "loops": loops,
        "loops_per_s": spread(rates),
        "baseline_loops_per_s": spread(base),
        "ratio_to_baseline": statistics.median(rates) / statistics.median(base),
        "lease_ms": {k: median_of(platform_runs, "lease", k) for k in ("p50", "p95", "p99")},
        "submit_ms": {k: median_of(platform_runs, "submit", k) for k in ("p50", "p95", "p99")},
        "baseline_read_ms": {k: median_of(baseline_runs, "read", k) for k in ("p50", "p99")},
        "cpu_ms_per_loop": statistics.median(cpus) if cpus else None,
        "over_assigned_tasks": sum(r["over_assigned_tasks"] for r in platform_runs),
        "lost_judgments": sum(r["lost_judgments"] for r in platform_runs),
        "phantom_judgments": sum(r["phantom_judgments"] for r in platform_runs),
        "server_errors": sum(r["server_errors"] for r in platform_runs + baseline_runs),
        "problems": [p for r in platform_runs for p in r["problems"]],
    }


def targets_check(results: dict[str, Any]) -> dict[str, Any]:
    at32, at1 = results.get("32"), results.get("1")
    if at32 is None:
        return {"lines": ["(no 32-client run: targets not checked)"], "verdicts": {}}
    cpu = at32["cpu_ms_per_loop"]
    checks = {
        "loops_per_s >= 82 at 32 clients": at32["loops_per_s"]["median"] >= TARGET["loops_per_s"],
        "lease p99 <= 250 ms at 32 clients": at32["lease_ms"]["p99"] <= TARGET["lease_p99_ms"],
        "CPU <= 18 ms per loop at 32 clients": cpu is not None and cpu <= TARGET["cpu_ms_per_loop"],
        ">= 0.5x baseline at 32 clients": at32["ratio_to_baseline"] >= TARGET["ratio_to_baseline"],
        "zero over-assignment": all(r["over_assigned_tasks"] == 0 for r in results.values()),
        "zero lost judgments": all(r["lost_judgments"] == 0 for r in results.values()),
    }
    if at1 is not None:
        checks["one client >= 40 loops/s"] = (
            at1["loops_per_s"]["median"] >= TARGET["loops_per_s_one_client"]
        )
    lines = ["targets: " + "; ".join(f"{k}: {verdict(v)}" for k, v in checks.items())]
    return {"lines": lines, "verdicts": checks}


if __name__ == "__main__":
    main()
