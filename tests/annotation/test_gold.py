"""Gold tasks: an admin sets a reference answer; annotators are served gold tasks at the round's
rate, each once, looking exactly like ordinary tasks; rounds count them apart."""

from __future__ import annotations

import pytest
from django.db import connection

from annotation.distribution import gold_due
from annotation.gold import GOLD_OVERLAP
from annotation.models import ComparisonTask, Round
from feedback.models import ThrottleHit

from ..factories import open_round
from .helpers import in_task_order, lease, submit_url, valid_body

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("hot_path")]


def gold_url(task_id: int) -> str:
    return f"/api/v1/tasks/{task_id}/gold/"


def reference(task: ComparisonTask) -> list[list[int]]:
    """The task's completions in reverse position order, one per group."""
    ids = list(task.slots.order_by("position").values_list("completion_id", flat=True))
    return [[cid] for cid in reversed(ids)]


def test_an_admin_marks_and_unmarks_a_gold_task(api, admin):
    round_ = open_round(n=3, k=3, overlap=2)
    task = round_.tasks.order_by("id").first()
    client = api(admin)

    response = client.put(gold_url(task.pk), {"ranking": reference(task)}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["gold"] is True and body["gold_ranking"] == reference(task)
    task.refresh_from_db()
    round_.refresh_from_db()
    assert task.overlap == GOLD_OVERLAP and round_.gold_count == 1
    # Marking again replaces the reference and does not count the task twice.
    again = client.put(gold_url(task.pk), {"ranking": reference(task)[::-1]}, format="json")
    assert again.status_code == 200
    round_.refresh_from_db()
    assert round_.gold_count == 1

    progress = client.get(f"/api/v1/rounds/{round_.pk}/").json()["progress"]
    assert progress["tasks"] == 2 and progress["target"] == 4 and progress["gold_tasks"] == 1

    removed = client.delete(gold_url(task.pk))
    assert removed.status_code == 200 and removed.json()["gold"] is False
    task.refresh_from_db()
    round_.refresh_from_db()
    assert task.overlap == 2 and task.gold_ranking is None and round_.gold_count == 0


def test_bad_gold_references_are_400s_naming_the_field(api, admin):
    round_ = open_round(n=1, k=3)
    task = round_.tasks.get()
    ids = reference(task)
    client = api(admin)
    cases = [
        ({"ranking": [[999999]]}, "ranking"),
        ({"ranking": [[c for (c,) in ids]]}, "ranking"),  # all tied: nothing to measure against
        ({"ranking": ids, "scores": {str(ids[0][0]): {"helpful": 9}}}, "scores."),
        ({}, "ranking"),
    ]
    for body, field in cases:
        response = client.put(gold_url(task.pk), body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert any(key.startswith(field) for key in response.json()["fields"]), response.json()
    task.refresh_from_db()
    assert task.gold_ranking is None
    assert client.put(gold_url(999999), {"ranking": ids}, format="json").status_code == 404


def test_only_admins_set_gold(api, researcher, annotator):
    task = open_round(n=1).tasks.get()
    for user in (researcher, annotator, None):
        response = api(user).put(gold_url(task.pk), {"ranking": reference(task)}, format="json")
        assert response.status_code in (401, 403)
    task.refresh_from_db()
    assert task.gold_ranking is None


def test_gold_tasks_are_served_to_every_annotator_once_and_look_ordinary(
    api, admin, annotator, annotator2
):
    round_ = open_round(n=3, k=3, overlap=1)
    gold = round_.tasks.order_by("id").first()
    api(admin).put(gold_url(gold.pk), {"ranking": reference(gold)}, format="json")
    api(admin).patch(f"/api/v1/rounds/{round_.pk}/", {"gold_rate": 1.0}, format="json")

    for user in (annotator, annotator2):
        client = api(user)
        first = lease(client)
        # Served first (rate 1), to both annotators although the round's overlap is 1.
        assert first["task"] == gold.pk
        ordinary = lease_after_submit(client, first)
        assert ordinary["task"] != gold.pk
        # Nothing in the payload tells a gold task from an ordinary one.
        assert set(first) == set(ordinary)
        assert set(first["completions"][0]) == set(ordinary["completions"][0])
        assert "gold" not in str(first).lower()
        # Ranked in the task's position order, the reference is the reverse: every pair is wrong.
        stats = client.get("/api/v1/me/stats/").json()
        assert stats["gold_judgments"] == 1 and stats["gold_accuracy"] == 0.0
    gold.refresh_from_db()
    assert gold.submitted_count == 2


def lease_after_submit(client, task):
    body = valid_body(in_task_order(task))
    response = client.post(submit_url(task["assignment"]), body, format="json")
    assert response.status_code in (200, 201), response.content
    return lease(client)


def test_a_lease_in_a_gold_round_counts_once_under_the_rate_limit(api, admin, annotator, settings):
    """Gold served in place of an ordinary task, a held lease, and the next task: each lease is
    one request under the limit, whichever path served it."""
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "lease": "300/min"}
    round_ = open_round(n=3, k=2, overlap=1)
    gold = round_.tasks.order_by("id").first()
    api(admin).put(gold_url(gold.pk), {"ranking": reference(gold)}, format="json")
    Round.objects.filter(pk=round_.pk).update(gold_rate=1.0)
    client = api(annotator)
    first = lease(client)
    assert first["task"] == gold.pk
    again = lease(client)  # held: the same assignment back
    assert again["assignment"] == first["assignment"]
    assert lease_after_submit(client, first)["task"] != gold.pk
    assert ThrottleHit.objects.filter(key=f"lease:user:{annotator.pk}").count() == 3


def test_gold_is_mixed_in_at_the_rate_and_never_served_alone(api, admin, annotator):
    round_ = open_round(n=24, k=2, overlap=1)
    golds = list(round_.tasks.order_by("id")[:8])
    for task in golds:
        api(admin).put(gold_url(task.pk), {"ranking": reference(task)}, format="json")
    Round.objects.filter(pk=round_.pk).update(gold_rate=0.25)
    client = api(annotator)
    served = []
    while (task := lease(client)) is not None:
        served.append(task["task"])
        client.post(submit_url(task["assignment"]), valid_body(task), format="json")
    gold_ids = {task.pk for task in golds}
    gold_served = [t for t in served if t in gold_ids]
    # All 16 ordinary tasks, and gold among them at about a quarter: the guards keep it within
    # one task of rate * (tasks so far + 1), whichever annotator id the test database gives.
    assert len(served) - len(gold_served) == 16
    assert 2 <= len(gold_served) <= 0.25 * len(served) + 1
    # Gold only ever stands in for an ordinary task that stays in the queue, so the queue ends
    # with an ordinary task, when the ordinary work does, with gold tasks left unserved.
    assert served[-1] not in gold_ids
    assert len(gold_served) < len(golds)


def test_gold_due_follows_the_rate():
    draws = [gold_due(annotator_id=7, judged=n, gold_judged=0, rate=0.0) for n in range(50)]
    assert not any(draws)
    assert gold_due(annotator_id=7, judged=0, gold_judged=0, rate=1.0)
    # Over many annotators the share of first tasks that are gold is near the rate.
    share = sum(gold_due(annotator_id=a, judged=0, gold_judged=0, rate=0.2) for a in range(2000))
    assert 0.16 < share / 2000 < 0.24
    # More than one task behind the rate, gold is due whatever the draw; more than one ahead,
    # it is not.
    assert all(gold_due(annotator_id=a, judged=9, gold_judged=0, rate=0.25) for a in range(500))
    assert not any(gold_due(annotator_id=a, judged=3, gold_judged=3, rate=0.25) for a in range(500))
    # The same state gives the same answer (a retried lease is the same kind of task).
    assert gold_due(annotator_id=3, judged=5, gold_judged=1, rate=0.5) == gold_due(
        annotator_id=3, judged=5, gold_judged=1, rate=0.5
    )


@pytest.mark.postgres
def test_the_database_draws_gold_as_python_does(postgres):
    """The lease function decides with ``annotation_gold_due`` (migration annotation/0017): the
    same guards and the same draw as ``gold_due``, over states inside and outside the guards."""
    states = [
        (annotator, judged, gold_judged, rate)
        for annotator in (1, 7, 12345)
        for judged in range(0, 40, 3)
        for gold_judged in range(0, 12, 2)
        for rate in (0.0, 0.1, 0.25, 0.5, 1.0)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT annotation_gold_due(a, j, g, r) FROM unnest(%s::int[], %s::bigint[], "
            "%s::bigint[], %s::float8[]) AS s(a, j, g, r)",
            [list(column) for column in zip(*states, strict=True)],
        )
        in_database = [row[0] for row in cursor.fetchall()]
    in_python = [gold_due(annotator_id=a, judged=j, gold_judged=g, rate=r) for a, j, g, r in states]
    assert in_database == in_python
    # Not vacuous: some of the states are due and some are not.
    assert 0 < sum(in_python) < len(states)
