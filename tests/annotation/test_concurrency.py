"""Fifty annotators at once on PostgreSQL: every task ends at exactly its overlap target, nobody
judges a task twice, no judgment is lost or duplicated, and no request fails.

Each client is a thread with its own database connection, going through the whole API stack
(token auth, permissions, views, services) as a script would.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from django.db import connection
from django.db.models import Count

from annotation.models import Assignment, ComparisonTask, Judgment
from feedback.roles import Role

from ..conftest import client_for
from ..factories import UserFactory, open_round
from .helpers import NEXT, skip_url, submit_url, valid_body

CLIENTS = 50
# Tasks per overlap: 2,000 loops at overlap 1, 3,000 at overlap 3 (three annotators race for
# each task's slots), enough to race every path and short enough for the suite's time budget.
TASKS = {1: 2000, 3: 1000}


def annotate_until_done(client, seed, statuses, submitted, errors):
    rng = random.Random(seed)
    try:
        while True:
            response = client.post(NEXT)
            statuses[response.status_code] += 1
            if response.status_code == 204:
                return
            if response.status_code != 200:
                errors.append(response.content)
                return
            task = response.json()
            if rng.random() < 0.02:
                response = client.post(
                    skip_url(task["assignment"]), {"reason": "load test skip"}, format="json"
                )
            else:
                response = client.post(
                    submit_url(task["assignment"]), valid_body(task), format="json"
                )
                if response.status_code == 200:
                    submitted.append(response.json()["id"])
            statuses[response.status_code] += 1
            if response.status_code != 200:
                errors.append(response.content)
                return
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("overlap", [1, 3])
def test_fifty_concurrent_annotators_fill_every_task_exactly(postgres, overlap, capsys):
    open_round(n=TASKS[overlap], k=3, overlap=overlap, seed=overlap)
    clients = [client_for(UserFactory(role=Role.ANNOTATOR)) for _ in range(CLIENTS)]
    statuses: Counter[int] = Counter()
    submitted: list[str] = []
    errors: list[bytes] = []
    threads = [
        threading.Thread(target=annotate_until_done, args=(c, i, statuses, submitted, errors))
        for i, c in enumerate(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    assert errors == []
    assert set(statuses) <= {200, 204}
    tasks = ComparisonTask.objects.all()
    assert tasks.count() == TASKS[overlap]
    assert tasks.exclude(submitted_count=overlap).count() == 0
    assert tasks.exclude(leased_count=0).count() == 0
    assert (
        Judgment.objects.count()
        == TASKS[overlap] * overlap
        == len(submitted)
        == len(set(submitted))
    )
    per_task = Judgment.objects.values("task").annotate(
        n=Count("pk"), people=Count("annotator", distinct=True)
    )
    assert all(row["n"] == row["people"] == overlap for row in per_task)
    assert Assignment.objects.filter(status="leased").count() == 0
    with capsys.disabled():
        print(
            f"\n[concurrency] overlap={overlap}: {len(submitted)} lease+submit loops by {CLIENTS} "
            f"clients in {elapsed:.1f}s = {len(submitted) / elapsed:.0f} loops/s"
        )
