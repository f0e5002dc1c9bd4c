"""Each pytest-xdist worker gets its own copy of everything a test can write to.

`make test` runs the suite in two processes (pytest-xdist): most of its time is spent waiting on
other processes (a Celery worker, gunicorn, a browser, `transformers serve`), so two runs overlap
well even on two cores. pytest-django already gives each xdist worker its own test database
(``test_<name>_gw0``); this plugin does the same for the rest, before Django's settings are read
(it is loaded with ``-p``, ahead of pytest-django's own start-up):

* ``VAR_DIR`` (and so ``ARTIFACTS_DIR``, the filesystem broker, the worker logs): a sub-folder per
  xdist worker, since two databases hand out the same ids and runs are stored by id;
* a Redis broker: its own database number per xdist worker, so one session's Celery worker never
  takes the other session's jobs (and writes them to the wrong database).

``SHARED_VAR_DIR`` keeps the folder the run was given, for what the sessions share: the tiny
model is built once there, under a file lock, and copied into each worker's artifacts. Each
process gets its share of the cores for torch's threads (``OMP_NUM_THREADS``), and
``pytest_collection_modifyitems`` in ``tests/conftest.py`` hands out the longest files first.

Without xdist (``-p no:xdist``, ``-n 0`` or a single test) nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
REDIS_DATABASES = 16


def redis_database_for(url: str, worker_number: int) -> str:
    """The broker URL with a database number of this worker's own (the given one plus 1 + n)."""
    parts = urlsplit(url)
    given = parts.path.strip("/")
    base = int(given) if given.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{(base + 1 + worker_number) % REDIS_DATABASES}"))


def isolate(worker: str) -> None:
    number = int(worker.removeprefix("gw"))
    shared = Path(os.environ.get("VAR_DIR") or ROOT / "var")
    os.environ["SHARED_VAR_DIR"] = str(shared)
    os.environ["VAR_DIR"] = str(shared / worker)
    if os.environ.get("ARTIFACTS_DIR"):
        os.environ["ARTIFACTS_DIR"] = str(Path(os.environ["ARTIFACTS_DIR"]) / worker)
    # Each process's torch (and its workers' and servers') would start a thread per core: two
    # sessions on two cores would then fight over them. Share the cores out instead.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if broker.startswith(("redis://", "rediss://")):
        os.environ["CELERY_BROKER_URL"] = redis_database_for(broker, number)
        if os.environ.get("CELERY_RESULT_BACKEND", "").startswith(("redis://", "rediss://")):
            os.environ["CELERY_RESULT_BACKEND"] = redis_database_for(
                os.environ["CELERY_RESULT_BACKEND"], number
            )
    elif broker.startswith("amqp://"):
        # RabbitMQ would need a virtual host per worker, which takes admin rights to create.
        raise RuntimeError(
            "the suite runs in parallel (pytest-xdist) with a Redis or filesystem broker only; "
            "with RabbitMQ run it with -p no:xdist"
        )


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    isolate(_worker)
