"""The servers the load driver and the benchmarks run against: a real gunicorn on a free port,
warmed before it is measured, and the CPU it and PostgreSQL spend (``benchmarks/load.py`` and
``benchmarks/annotation_api.py`` measure with these; tests import ``gunicorn_serving``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
NEXT = "/api/v1/tasks/next/"  # the lease route: anonymous, it answers 401 once Django is up


# --- the server ------------------------------------------------------------------------------


def port_free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]


def port_wait(port: int, *, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll until the port accepts, the process died, or the deadline passed."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode} before serving")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not listen on {port} in {timeout} s") from None
            time.sleep(0.1)


def workers_warm(base_url: str, *, requests: int, timeout: float) -> None:
    """Concurrent cheap requests until each has answered, so that every worker has imported the
    app and the run's first latencies are not its boot. An anonymous lease is a 401 that touches
    neither the database nor a worker's connection."""

    def one() -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            while client.post(NEXT).status_code != 401:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn answered, but not with the anonymous 401")

    threads = [threading.Thread(target=one) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def gunicorn_serving(
    *,
    database_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    workers: int = 4,
    threads: int = 4,
    worker_class: str | None = None,
    ready_timeout: float = 60,
) -> Iterator[Server]:
    """A real ``gunicorn feedback.wsgi`` on a free port and ``database_url``; stopped on exit.
    ``worker_class`` is passed as ``--worker-class`` (gunicorn picks gthread itself for more than
    one thread; naming it says so in the command line)."""
    port = port_free()
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "feedback.wsgi",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
        *(["--worker-class", worker_class] if worker_class else []),
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {}), "DATABASE_URL": database_url},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        port_wait(port, process=process, timeout=ready_timeout)
        base_url = f"http://127.0.0.1:{port}"
        workers_warm(base_url, requests=workers * threads, timeout=ready_timeout)
        yield Server(base_url=base_url, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- CPU per loop ----------------------------------------------------------------------------


def cpu_seconds_gunicorn(process: subprocess.Popen[bytes]) -> float | None:
    """User+system CPU of the gunicorn master and its workers so far, where psutil is there."""
    try:
        import psutil
    except ImportError:
        return None
    master = psutil.Process(process.pid)
    total = 0.0
    for proc in [master, *master.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def cpu_seconds_backends(conn: Any) -> float | None:
    """CPU of the PostgreSQL backends now serving this database (gunicorn's: they were started
    for the run and live on, CONN_MAX_AGE), when the server runs on this machine."""
    try:
        import psutil
    except ImportError:
        return None
    pids = [row[0] for row in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()").fetchall()]  # fmt: skip
    total = 0.0
    try:
        for pid in pids:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    except psutil.Error:  # another machine, or another user's processes
        return None
    return total
