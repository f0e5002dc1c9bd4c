"""Scaling: how the cost of work grows with the data.

1. **Lease and submit as the task table grows** from 10k to 1M tasks (``QUICK=1``: 10k and 100k).
   One open round (overlap 3) is grown in place, in SQL, to each size: a prompt and a task per
   row, each task showing the same three completions, as a large imported round would; then 32
   clients over HTTP against gunicorn make a fixed number of lease+submit loops. The table gives
   loops per second, lease and submit p50/p99, and over-assignment and lost judgments (zero).
2. **Export time as judgments grow**: the default export (TRL, JSONL) of 10k, 100k and 1M
   preference pairs (``QUICK=1``: 10k and 100k), seeded as ``benchmarks/export.py`` seeds them,
   in a child process: seconds, rows per second and peak memory.

Flat rows per second as the data grows mean cost grows with the work, not with the data.
Databases of its own (``bench_scaling``, ``bench_scaling_export``), dropped and made anew each
run; ``var/bench/scaling``. Run: ``make bench`` or ``python benchmarks/scaling.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import quick, results_write  # noqa: E402

TASKS_URL = "postgres://postgres@127.0.0.1:5432/bench_scaling"
EXPORT_URL = "postgres://postgres@127.0.0.1:5432/bench_scaling_export"
CLIENTS = 32
OVERLAP = 3


def grow_round(conn: Any, *, round_id: int, to_tasks: int) -> float:
    """Add prompts and tasks to the open round until it holds ``to_tasks`` tasks, in SQL (the
    ORM would take minutes at a million); every new task shows the round's first task's three
    completions. Returns the seconds it took."""
    began = time.perf_counter()
    have = conn.execute(
        "SELECT count(*) FROM annotation_comparisontask WHERE round_id = %s", (round_id,)
    ).fetchone()[0]
    if to_tasks <= have:
        return 0.0
    first_task = conn.execute(
        "SELECT min(id) FROM annotation_comparisontask WHERE round_id = %s", (round_id,)
    ).fetchone()[0]
    shown = [row[0] for row in conn.execute(
        "SELECT completion_id FROM annotation_taskcompletion WHERE task_id = %s ORDER BY position",
        (first_task,)).fetchall()]  # fmt: skip
    top = conn.execute("SELECT coalesce(max(id), 0) FROM feedback_prompt").fetchone()[0]
    top_task = conn.execute("SELECT max(id) FROM annotation_comparisontask").fetchone()[0]
    with conn.transaction():
        conn.execute(
            "INSERT INTO feedback_prompt (messages, content_hash, source, tags, safety, created_at)"
            " SELECT jsonb_build_array(jsonb_build_object('role', 'user', 'content',"
            "   'Question ' || g || ': ' || md5(g::text) || repeat(' and then some more', 8))),"
            "   md5('scaling-' || g), 'scaling', '[]'::jsonb, false, now()"
            " FROM generate_series(%s::bigint, %s::bigint) AS g",
            (top + 1, top + to_tasks - have),
        )
        conn.execute(  # every column without a database default, as the ORM would write it
            "INSERT INTO annotation_comparisontask (overlap, submitted_count, leased_count,"
            " created_at, prompt_id, round_id, priority, round_open)"
            " SELECT %s, 0, 0, now(), p.id, r.id, r.priority, r.status <> 'closed'"
            " FROM feedback_prompt p, annotation_round r WHERE p.id > %s AND r.id = %s"
            " ORDER BY p.id",
            (OVERLAP, top, round_id),
        )
        conn.execute(
            "INSERT INTO annotation_taskcompletion (position, completion_id, task_id)"
            " SELECT p, (%s::bigint[])[p + 1], t.id FROM annotation_comparisontask t"
            " CROSS JOIN generate_series(0, 2) AS p WHERE t.id > %s",
            (shown, top_task),
        )
    conn.execute("VACUUM ANALYZE annotation_comparisontask, annotation_taskcompletion")
    return time.perf_counter() - began


def tasks_part(sizes: list[int], loops: int) -> list[dict[str, Any]]:
    import psycopg
    from django.core.management import call_command
    from django.db import connections

    from annotation.models import ComparisonTask, Judgment
    from benchmarks.load import annotator_tokens, gunicorn_serving, load_run, round_seed

    call_command("migrate", verbosity=0)
    round_ = round_seed(tasks=100, overlap=OVERLAP, seed=1)
    tokens = annotator_tokens(CLIENTS)
    connections.close_all()
    rows = []
    with (
        psycopg.connect(TASKS_URL, autocommit=True) as conn,
        gunicorn_serving(database_url=TASKS_URL, log=ROOT / "var/bench/scaling/gunicorn.log",
                         env={"THROTTLE_LEASE": ""}) as server,
    ):  # fmt: skip
        for size in sizes:
            grown = grow_round(conn, round_id=round_.pk, to_tasks=size)
            judged_before = Judgment.objects.count()
            report = load_run(base_url=server.base_url, tokens=tokens, skip_rate=0.0,
                              loops=loops)  # fmt: skip
            over = ComparisonTask.objects.filter(round=round_, submitted_count__gt=OVERLAP).count()
            stored = Judgment.objects.count() - judged_before
            latency = report.percentiles_ms()
            rows.append({
                "tasks": size, "grow_seconds": grown, "loops": len(report.submitted),
                "loops_per_s": report.loops_per_s, "lease_ms": latency["lease"],
                "submit_ms": latency["submit"], "over_assigned_tasks": over,
                "lost_judgments": len(report.submitted) - stored,
                "errors": report.errors[:5],
            })  # fmt: skip
            connections.close_all()
            print(f"{size:>9,} tasks (grown in {grown:.1f} s): {report.loops_per_s:.1f} loops/s, "
                  f"lease p99 {latency['lease']['p99']:.0f} ms", flush=True)  # fmt: skip
    return rows


def export_part(sizes: list[int]) -> list[dict[str, Any]]:
    from benchmarks._seed import seed_preference_pairs
    from benchmarks.export import database_ensure, platform_run

    database_ensure(EXPORT_URL, reset=True)
    import subprocess

    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity=0"],
                   env={**os.environ, "DATABASE_URL": EXPORT_URL}, check=True)  # fmt: skip
    rows = []
    out = ROOT / "var" / "bench" / "scaling" / "export.jsonl"
    for pairs in sizes:
        seeded = seed_preference_pairs(conninfo=EXPORT_URL, pairs=pairs)
        run = platform_run(url=EXPORT_URL, fmt="trl", file_format="jsonl", out=out)
        rows.append({
            "pairs": run["rows"], "judgments": seeded.judgments, "seconds": run["seconds"],
            "rows_per_s": run["rows"] / run["seconds"], "mb_per_s":
            run["size_bytes"] / 2**20 / run["seconds"], "peak_rss_mb": run["peak_rss_mb"],
        })  # fmt: skip
        print(f"{run['rows']:>9,} pairs: exported in {run['seconds']:.1f} s "
              f"({rows[-1]['rows_per_s']:,.0f} rows/s, peak {run['peak_rss_mb']:.0f} MB)",
              flush=True)  # fmt: skip
    out.unlink(missing_ok=True)
    return rows


def main() -> None:
    args = _arguments()
    task_sizes = [int(n) for n in args.tasks.split(",")]
    pair_sizes = [int(n) for n in args.pairs.split(",")]
    _database_prepare()
    tasks = tasks_part(task_sizes, args.loops)
    exports = export_part(pair_sizes)
    _print_table(tasks, exports)
    results_write(
        "scaling",
        {"clients": CLIENTS, "loops": args.loops, "tasks": tasks, "exports": exports},
        chart=lambda plt: _chart(plt, tasks, exports),
        command=f"python benchmarks/scaling.py --tasks {args.tasks} --pairs {args.pairs}",
    )
    if any(r["over_assigned_tasks"] or r["lost_judgments"] or r["errors"] for r in tasks):
        raise SystemExit("over-assignment, lost judgments or errors: see the table")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_tasks = "10000,100000" if quick() else "10000,100000,1000000"
    parser.add_argument("--tasks", default=default_tasks, help="task table sizes")
    parser.add_argument("--pairs", default=default_tasks, help="export sizes, in pairs")
    parser.add_argument("--loops", type=int, default=300 if quick() else 900)
    return parser.parse_args()


def _database_prepare() -> None:
    """A fresh database for the task table, Django set up on it (``tasks_part`` migrates it)."""
    from benchmarks.export import database_ensure

    var_dir = ROOT / "var" / "bench" / "scaling"
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = TASKS_URL
    database_ensure(TASKS_URL, reset=True)
    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _print_table(tasks: list[dict[str, Any]], exports: list[dict[str, Any]]) -> None:
    print()
    print(f"{'tasks':>9} {'loops/s':>8} {'lease p50':>9} {'lease p99':>9} {'submit p99':>10} "
          f"{'over':>5} {'lost':>5}")  # fmt: skip
    for r in tasks:
        print(f"{r['tasks']:>9,} {r['loops_per_s']:8.1f} {r['lease_ms']['p50']:9.0f} "
              f"{r['lease_ms']['p99']:9.0f} {r['submit_ms']['p99']:10.0f} "
              f"{r['over_assigned_tasks']:5d} {r['lost_judgments']:5d}")  # fmt: skip
    print(f"{'pairs':>9} {'seconds':>8} {'rows/s':>9} {'MB/s':>6} {'peak MB':>8}")
    for r in exports:
        print(f"{r['pairs']:>9,} {r['seconds']:8.1f} {r['rows_per_s']:9,.0f} "
              f"{r['mb_per_s']:6.1f} {r['peak_rss_mb']:8.0f}")  # fmt: skip


def _chart(plt: Any, tasks: list[dict[str, Any]], exports: list[dict[str, Any]]) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([r["tasks"] for r in tasks], [r["loops_per_s"] for r in tasks], marker="o",
              label="loops/s")  # fmt: skip
    left.set_xscale("log")
    left.set_xlabel("tasks in the table")
    left.set_ylabel(f"lease+submit loops/s ({CLIENTS} clients)")
    left.set_ylim(bottom=0)
    twin = left.twinx()
    twin.plot([r["tasks"] for r in tasks], [r["lease_ms"]["p99"] for r in tasks],
              marker="s", color="tab:red", label="lease p99 (ms)")  # fmt: skip
    twin.set_ylabel("lease p99 (ms)")
    twin.set_ylim(bottom=0)
    left.set_title("Annotation as the task table grows")
    right.plot([r["pairs"] for r in exports], [r["seconds"] for r in exports], marker="o")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("preference pairs")
    right.set_ylabel("export seconds (TRL JSONL)")
    right.set_title("Export time as judgments grow")
    return figure


if __name__ == "__main__":
    main()
