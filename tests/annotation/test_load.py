"""Fifty annotators over real HTTP against a real gunicorn (4 workers of 4 threads) and
PostgreSQL: every task ends at exactly its overlap target, as many judgments as submits that
answered 200, nobody judges a task twice, no 5xx, no lease left.

Each client is a thread with its own ``httpx`` client and token, looping lease → submit (2% of
the time skip) until 204, as a script would; at most 16 requests are served at once, each on
its own database connection, racing for the same task rows. The load driver is the benchmark's
(``benchmarks/load.py``), run briefly here; the benchmark runs it long and records loops/s and
latency percentiles. The test prints them. (It replaced an in-process version, 50 threads
calling the API through DRF's test client, which took longer for the same loops.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from benchmarks.load import annotator_tokens, gunicorn_serving, load_problems, load_run, round_seed

from ..conftest import database_url

CLIENTS = 50
# Tasks per overlap: 400 loops at overlap 1, 720 at overlap 3 (three annotators race for each
# task's slots): 50 clients race every path many times over, in the suite's time budget (the
# benchmark, benchmarks/annotation_api.py, runs the long version).
TASKS = {1: 400, 3: 240}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 3])
def test_fifty_annotators_over_http_fill_every_task_exactly(
    postgres: None, overlap: int, capsys: pytest.CaptureFixture[str]
) -> None:
    round_ = round_seed(tasks=TASKS[overlap], overlap=overlap, seed=overlap)
    tokens = annotator_tokens(CLIENTS)
    log = Path(settings.VAR_DIR) / "test-gunicorn-load.log"
    with gunicorn_serving(database_url=database_url(), log=log) as server:
        report = load_run(base_url=server.base_url, tokens=tokens)

    assert load_problems(report, round_=round_) == []
    assert set(report.statuses) <= {200, 204}
    assert len(report.submitted) == TASKS[overlap] * overlap
    with capsys.disabled():
        print(f"\n[load, gunicorn] overlap={overlap}: {report.summary()}")
