"""Export throughput and memory: the platform's file export against COPY of the same rows.

The platform side is ``annotation.exports.export_write`` (the code an export job runs). On
PostgreSQL the pair formats' lines are built by the database (``annotation/exports/sql.py``:
the rankings expanded into pairs, the margins, the JSON of every line) and streamed with COPY on
two connections (``copied.py``); this process only writes them (and, for Parquet, hands them to
Arrow). Each run is a child process of this script, so its peak RSS (``ru_maxrss``) is its own;
the RSS it had after imports, before exporting, is reported next to it so the export's own
growth shows, and so is where the time went: the child's CPU time and PostgreSQL's (every
server process's, read from ``/proc``: approximate on a shared server). The warm-up also runs
the Python path (the rows built in Python, as on SQLite) and checks that its file is the same,
byte for byte.

The baseline is ``COPY (SELECT …) TO STDOUT`` of the very same rows, read through psycopg's copy
and written to a file. The rows are materialised once per format: the platform's JSONL file is
loaded into an UNLOGGED table of JSON text, and COPY streams it back out, byte for byte the same
file (checked by sha256): COPY of ready rows is the fastest PostgreSQL can hand rows to a
client, so it stays the baseline although the platform now builds its rows in SQL. Runs
alternate platform and COPY, ``--repeat`` times, on a noisy shared machine.

DESIGN §10 targets: at least half COPY's rows per second for JSONL (0.4x for Parquet); peak
memory under 200 MB for 1M pairs. Each target's line says MET, or MISSED with the profile.

It works in a database of its own (``bench_export``, created if missing, migrated, seeded once
with ``benchmarks/_seed.py``; reruns reuse the data) and in ``var/bench/export``, so it never
touches another database. Run: ``python benchmarks/export.py`` (1M pairs), ``--quick`` or
``QUICK=1`` (100k pairs, one repeat), ``--all-formats`` for every export format.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
os.environ["VAR_DIR"] = str(ROOT / "var" / "bench" / "export")

from benchmarks.report import results_write  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_export"
TABLE = "bench_export_rows"
# CSV with a quote and delimiter that JSON never leaves raw (it escapes control characters), so
# COPY neither quotes nor escapes anything: a line goes in and comes out as the same bytes.
RAW_LINES = "(FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
TARGET_RATIO = 0.5
TARGET_RATIOS = {"jsonl": 0.5, "parquet": 0.4}
TARGET_PEAK_MB = 200
MB = 1_000_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def server_cpu_s() -> float | None:
    """CPU seconds of every PostgreSQL process on this machine, ended ones included (the
    postmaster's children's times); None where the server is not local or ``/proc`` is closed."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.find("(") + 1 : text.rfind(")")] != "postgres":
            continue
        fields = text[text.rfind(")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return _peak_rss_mb()
    return psutil.Process().memory_info().rss / 2**20


# --- the platform side, in a child process -------------------------------------------------


def child_export(*, fmt: str, file_format: str, out: Path) -> dict[str, Any]:
    """One platform export, timed; what the parent needs comes back as one JSON line."""
    import django

    django.setup()
    from annotation.exports import ExportFilters, export_write, sql

    sql.ENABLED = os.environ.get("EXPORT_PYTHON_PATH", "") in ("", "0")
    gc.collect()
    rss_before = _rss_mb()
    server_before, cpu_before = server_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    result = export_write(fmt=fmt, file_format=file_format, filters=ExportFilters(), out=out)
    seconds = time.perf_counter() - began
    server_after, cpu_after = server_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    return {
        "rows": result.rows, "size_bytes": result.size_bytes, "sha256": result.sha256,
        "seconds": seconds, "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb(),
        "client_cpu_s": cpu_after.ru_utime + cpu_after.ru_stime
        - cpu_before.ru_utime - cpu_before.ru_stime,
        "server_cpu_s": None if server_before is None or server_after is None
        else server_after - server_before,
        "load_average": os.getloadavg()[0],
    }  # fmt: skip


def platform_run(
    *, url: str, fmt: str, file_format: str, out: Path, python_path: bool = False
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", fmt, file_format, str(out),
               "--database-url", url]  # fmt: skip
    env = os.environ | {"EXPORT_PYTHON_PATH": "1" if python_path else "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"platform export {fmt}/{file_format} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the baseline: COPY of the same rows ----------------------------------------------------


def rows_materialise(conn: Any, *, source: Path) -> int:
    """Load a JSONL file, a line a row, into the UNLOGGED table the baseline copies out."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} (line text NOT NULL)")
        cur.execute(f"TRUNCATE {TABLE}")
        with (
            cur.copy(f"COPY {TABLE} (line) FROM STDIN {RAW_LINES}") as copy,
            source.open("rb") as lines,
        ):
            while block := lines.read(1 << 20):
                copy.write(block)
        rows = cur.rowcount
    conn.commit()
    conn.autocommit = True
    conn.execute(f"VACUUM ANALYZE {TABLE}")  # all-visible, as a settled table would be
    conn.autocommit = False
    return rows


def copy_run(conn: Any, *, out: Path) -> dict[str, Any]:
    began = time.perf_counter()
    size = 0
    with conn.cursor() as cur, out.open("wb") as file:
        with cur.copy(f"COPY (SELECT line FROM {TABLE}) TO STDOUT {RAW_LINES}") as copy:
            for block in copy:
                size += file.write(block)
        rows = cur.rowcount
    conn.commit()
    return {"rows": rows, "size_bytes": size, "seconds": time.perf_counter() - began}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- the run ---------------------------------------------------------------------------------


def database_ensure(url: str, *, reset: bool) -> None:
    """Create the benchmark database when it is missing (or, with ``reset``, anew)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        if reset:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))  # fmt: skip
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_format(
    conn: Any, *, url: str, fmt: str, file_formats: list[str], repeat: int, scratch: Path
) -> list[dict[str, Any]]:
    """Warm-up and materialise from one JSONL export, then alternate platform and COPY runs."""
    source = scratch / f"{fmt}.jsonl"
    warm = platform_run(url=url, fmt=fmt, file_format="jsonl", out=source)
    print(f"{fmt}: warm-up export, {warm['rows']:,} rows in {warm['seconds']:.1f} s", flush=True)
    if warm["rows"] == 0:
        source.unlink(missing_ok=True)
        return [{"format": fmt, "file_format": ff, "rows": 0} for ff in file_formats]
    python_out = scratch / f"{fmt}.python.jsonl"
    python = platform_run(url=url, fmt=fmt, file_format="jsonl", out=python_out, python_path=True)
    python_out.unlink()
    same = python["sha256"] == warm["sha256"]
    print(f"{fmt}: the Python path, {python['rows'] / python['seconds']:,.0f} rows/s; its file "
          f"{'is' if same else 'IS NOT'} the same, byte for byte", flush=True)  # fmt: skip
    loaded = rows_materialise(conn, source=source)
    assert loaded == warm["rows"], (loaded, warm["rows"])
    copied = scratch / f"{fmt}.copy.jsonl"
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        ff: {"platform": [], "copy": []} for ff in file_formats
    }
    for _ in range(repeat):
        for ff in file_formats:
            out = scratch / f"{fmt}.platform.{ff}"
            run = platform_run(url=url, fmt=fmt, file_format=ff, out=out)
            out.unlink()
            runs[ff]["platform"].append(run)
            base = copy_run(conn, out=copied)
            runs[ff]["copy"].append(base)
            print(f"{fmt}/{ff}: platform {run['rows'] / run['seconds']:,.0f} rows/s "
                  f"(peak {run['peak_rss_mb']:.0f} MB), COPY "
                  f"{base['rows'] / base['seconds']:,.0f} rows/s", flush=True)  # fmt: skip
    identical = file_sha256(copied) == warm["sha256"]
    copied.unlink()
    source.unlink()

    results = []
    for ff in file_formats:
        platform_runs, copy_runs = runs[ff]["platform"], runs[ff]["copy"]
        rows = platform_runs[0]["rows"]
        assert all(r["rows"] == rows == loaded for r in platform_runs + copy_runs)
        platform_rate = summary([r["rows"] / r["seconds"] for r in platform_runs])
        copy_rate = summary([r["rows"] / r["seconds"] for r in copy_runs])
        results.append({
            "format": fmt, "file_format": ff, "rows": rows,
            "size_bytes": platform_runs[0]["size_bytes"],
            "platform_rows_per_s": platform_rate, "copy_rows_per_s": copy_rate,
            "ratio": platform_rate["median"] / copy_rate["median"],
            "platform_mb_per_s": statistics.median(
                r["size_bytes"] / r["seconds"] / MB for r in platform_runs),
            "copy_mb_per_s": statistics.median(
                r["size_bytes"] / r["seconds"] / MB for r in copy_runs),
            "rss_before_mb": max(r["rss_before_mb"] for r in platform_runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in platform_runs),
            "copy_bytes_identical_to_platform_jsonl": identical,
            "python_path_rows_per_s": python["rows"] / python["seconds"],
            "python_path_bytes_identical": same,
            "target_ratio": TARGET_RATIOS.get(ff, TARGET_RATIO),
            "platform_runs": platform_runs, "copy_runs": copy_runs,
        })  # fmt: skip
    return results


def table_print(results: list[dict[str, Any]]) -> None:
    def rate(value: dict[str, float]) -> str:
        return f"{value['median']:,.0f} ({value['min']:,.0f}-{value['max']:,.0f})"

    print(
        f"{'format':14} {'file':8} {'rows':>10} {'platform rows/s (spread)':>28} "
        f"{'COPY rows/s (spread)':>28} {'ratio':>6} {'MB/s':>6} {'RSS MB before/peak':>19}"
    )
    for r in results:
        if not r["rows"]:
            print(f"{r['format']:14} {r['file_format']:8} {0:>10}  (no rows: nothing to measure)")
            continue
        print(f"{r['format']:14} {r['file_format']:8} {r['rows']:>10,} "
              f"{rate(r['platform_rows_per_s']):>28} {rate(r['copy_rows_per_s']):>28} "
              f"{r['ratio']:6.2f} {r['platform_mb_per_s']:6.1f} "
              f"{r['rss_before_mb']:9.0f} / {r['peak_rss_mb']:<7.0f}")  # fmt: skip


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """A line per target: MET, or MISSED with where the time (or the memory) went."""
    lines = []
    for r in (r for r in results if r["rows"]):
        name = f"{r['format']}/{r['file_format']}"
        met = r["ratio"] >= r["target_ratio"]
        lines.append(
            f"target {name}: ratio >= {r['target_ratio']}: {r['ratio']:.2f} "
            f"{'MET' if met else 'MISSED'}" + ("" if met else f"; {profile(r)}")
        )
        met = r["peak_rss_mb"] < TARGET_PEAK_MB
        lines.append(f"target {name}: peak RSS < {TARGET_PEAK_MB} MB: {r['peak_rss_mb']:.0f} MB "
                     f"{'MET' if met else 'MISSED'}" + ("" if met else
                     f" ({r['rss_before_mb']:.0f} MB before the first row: Django, psycopg, "
                     "pyarrow)"))  # fmt: skip
    return lines


def profile(r: dict[str, Any]) -> str:
    """Where a run's time went (the median run): the child's CPU, PostgreSQL's, the load."""
    runs = sorted(r["platform_runs"], key=lambda run: run["seconds"])
    run = runs[len(runs) // 2]
    server = run.get("server_cpu_s")
    text = (f"profile of the median run: {run['seconds']:.1f} s wall, this process "
            f"{run['client_cpu_s']:.1f} s CPU")  # fmt: skip
    if server is not None:
        text += (f", PostgreSQL {server:.1f} s CPU (building the lines on two connections; "
                 "COPY's own run took "
                 f"{statistics.median(c['seconds'] for c in r['copy_runs']):.1f} s)")  # fmt: skip
    limit = "PostgreSQL building the lines" if (server or 0) > run["client_cpu_s"] else (
        "this process (writing" + (", Arrow's reading and encoding)" if r["file_format"] ==
                                   "parquet" else " and hashing)"))  # fmt: skip
    return text + f", load average {run['load_average']:.1f}; the most CPU: {limit}"


def chart(results: list[dict[str, Any]]) -> Any:
    """A bar chart of platform and COPY rows/s per export (for ``results_write``)."""

    def draw(plt: Any) -> Any:
        measured = [r for r in results if r["rows"]]
        labels = [f"{r['format']}\n{r['file_format']}" for r in measured]
        xs = range(len(measured))
        figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(measured)), 4))
        axes.bar([x - 0.2 for x in xs], [r["platform_rows_per_s"]["median"] for r in measured],
                 width=0.4, label="platform")  # fmt: skip
        axes.bar([x + 0.2 for x in xs], [r["copy_rows_per_s"]["median"] for r in measured],
                 width=0.4, label="PostgreSQL COPY, same rows")  # fmt: skip
        axes.set_xticks(list(xs), labels)
        axes.set_ylabel("rows per second (median)")
        axes.set_title("Export throughput")
        axes.legend()
        return figure

    return draw


def main() -> None:
    args = _arguments()
    os.environ["DATABASE_URL"] = args.database_url
    if args.child:
        fmt, file_format, out = args.child
        print(json.dumps(child_export(fmt=fmt, file_format=file_format, out=Path(out))))
        return
    pairs = args.pairs or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 3)
    seeded = _database_prepare(args.database_url, reset=args.reset, pairs=pairs)
    results, server = _measure(args, repeat=repeat)
    print()
    table_print(results)
    measured = [r for r in results if r["rows"]]
    print(f"{seeded.pairs:,} pairs seeded, {repeat} alternating repeat(s), load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    for line in verdicts(measured):
        print(line)
    if not all(r["python_path_bytes_identical"] for r in measured):
        print("warning: the Python path wrote other bytes than the SQL path")
    if not all(r["copy_bytes_identical_to_platform_jsonl"] for r in measured):
        print("warning: a COPY output differs from the platform's JSONL it was loaded from")

    results_write(
        "export",
        {"args": {k: str(v) for k, v in vars(args).items() if k != "child"},
         "pairs": pairs, "repeat": repeat,
         "seed": {"pairs": seeded.pairs, "judgments": seeded.judgments, "tasks": seeded.tasks,
                  "seconds": seeded.seconds, "reused": seeded.reused},
         "postgresql": server,
         "targets": {"ratio_at_least": TARGET_RATIO, "peak_rss_mb_below": TARGET_PEAK_MB,
                     "ratio_at_least_by_file_format": TARGET_RATIOS},
         "verdicts": verdicts(measured),
         "results": results},
        chart=chart(results),
        command=f"python benchmarks/export.py --pairs {pairs} --repeat {repeat}"
        + (" --all-formats" if args.all_formats else ""),
    )  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))  # fmt: skip
    parser.add_argument("--pairs", type=int, help="preference pairs to seed (default 1,000,000)")
    parser.add_argument("--repeat", type=int, help="alternating repeats (default 3)")
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("QUICK", "") not in ("", "0"),
                        help="100,000 pairs, two repeats (also QUICK=1)")  # fmt: skip
    parser.add_argument("--all-formats", action="store_true", help="every export format")
    parser.add_argument("--reset", action="store_true", help="drop the database and seed anew")
    parser.add_argument("--child", nargs=3, metavar=("FORMAT", "FILE_FORMAT", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    return parser.parse_args()


def _database_prepare(database_url: str, *, reset: bool, pairs: int) -> Any:
    """The benchmark database, migrated and seeded with ``pairs`` preference pairs (reused when
    an earlier run seeded the same)."""
    database_ensure(database_url, reset=reset)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from benchmarks._seed import seed_preference_pairs

    call_command("migrate", verbosity=0)
    connections.close_all()
    seeded = seed_preference_pairs(conninfo=database_url, pairs=pairs)
    print(f"{seeded.pairs:,} pairs in {seeded.judgments:,} judgments: "
          + ("seeded before, reused" if seeded.reused else f"seeded in {seeded.seconds:.0f} s"),
          flush=True)  # fmt: skip
    return seeded


def _measure(args: argparse.Namespace, *, repeat: int) -> tuple[list[dict[str, Any]], str]:
    """Each format against COPY of the same rows, alternating; and the server's version."""
    import psycopg

    from annotation.exports import FILE_FORMATS, FORMATS

    scratch = ROOT / "var" / "bench" / "export" / "out"
    scratch.mkdir(parents=True, exist_ok=True)
    formats = list(FORMATS) if args.all_formats else ["trl"]
    results = []
    with psycopg.connect(args.database_url) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        for fmt in formats:
            results += measure_format(conn, url=args.database_url, fmt=fmt,
                                      file_formats=list(FILE_FORMATS), repeat=repeat,
                                      scratch=scratch)  # fmt: skip
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.commit()
    return results, server


if __name__ == "__main__":
    main()
