"""Leasing tasks: the same task back while held, nearest completion first, never a task twice,
expired leases returning their slot, skips, closed rounds, and pinned query counts.

Every test runs twice: on PostgreSQL a lease is one call of the ``annotation_lease`` function
(``annotation/lease.py``) and a submit's fast path one of ``annotation_submit``, and the same
steps written in Python (``distribution``, ``judgments``) still serve SQLite and
``HOT_PATH_IN_DATABASE=0``; the two must behave alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from annotation.distribution import leases_expire
from annotation.models import Assignment, ComparisonTask, Round

from ..factories import open_round
from .helpers import NEXT, lease, skip_url, submit_url, valid_body
from .test_query_counts import rubrics_read

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("hot_path")]


def test_lease_gives_prompt_completions_rubric_and_expiry(api, annotator):
    round_ = open_round(n=2, k=3)
    task = lease(api(annotator))
    assert task is not None
    assert task["round"] == round_.number
    assert len(task["completions"]) == 3
    assert task["prompt"]["messages"][-1]["role"] == "user"
    assert [a["key"] for a in task["rubric"]["axes"]] == ["helpful", "honest", "harmless"]
    assignment = Assignment.objects.get(pk=task["assignment"])
    assert assignment.status == Assignment.Status.LEASED
    assert assignment.lease_expires_at > timezone.now() + timedelta(minutes=29)
    # No model identity is shown to the annotator.
    assert set(task["completions"][0]) == {"id", "text", "html"}


def test_asking_again_while_holding_a_lease_returns_the_same_task(api, annotator):
    open_round(n=3)
    client = api(annotator)
    first = lease(client)
    again = lease(client)
    assert again["assignment"] == first["assignment"]
    assert again["lease_expires_at"] == first["lease_expires_at"]
    assert Assignment.objects.filter(annotator=annotator).count() == 1


def test_each_annotator_is_shown_the_task_in_an_order_of_their_own(api, annotator, annotator2):
    # The orders themselves are pinned in test_round_shuffle.py; here, only that they are the
    # same completions, in the order each assignment stored.
    open_round(n=1, k=4, overlap=2)
    first = lease(api(annotator))
    second = lease(api(annotator2))
    assert first["task"] == second["task"]
    shown = [[c["id"] for c in t["completions"]] for t in (first, second)]
    assert sorted(shown[0]) == sorted(shown[1])
    stored = [Assignment.objects.get(pk=t["assignment"]).display_order for t in (first, second)]
    assert stored == shown


def test_nearest_completion_goes_first(api, annotator, annotator2, make_user):
    open_round(n=3, overlap=3)
    started = lease(api(annotator))
    api(annotator).post(submit_url(started["assignment"]), valid_body(started), format="json")
    # The task with one judgment already is offered before the untouched ones.
    assert lease(api(annotator2))["task"] == started["task"]


def test_no_annotator_gets_a_task_twice(api, annotator):
    open_round(n=3, overlap=2)
    client = api(annotator)
    seen = []
    while (task := lease(client)) is not None:
        seen.append(task["task"])
        response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
        assert response.status_code == 200
    assert sorted(seen) == sorted(set(seen))
    assert len(seen) == 3


def test_204_when_every_slot_is_taken(api, annotator, annotator2):
    open_round(n=1, overlap=1)
    assert lease(api(annotator)) is not None
    response = api(annotator2).post(NEXT)
    assert response.status_code == 204
    assert response.content == b""


def test_expired_lease_returns_its_slot_to_the_pool(api, annotator, annotator2):
    open_round(n=1, overlap=1)
    held = lease(api(annotator))
    assert lease(api(annotator2)) is None
    Assignment.objects.filter(pk=held["assignment"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    ComparisonTask.objects.update(leases_expire_at=timezone.now() - timedelta(seconds=1))
    taken = lease(api(annotator2))
    assert taken is not None and taken["task"] == held["task"]
    assert Assignment.objects.get(pk=held["assignment"]).status == Assignment.Status.EXPIRED
    task = ComparisonTask.objects.get()
    assert (task.leased_count, task.submitted_count) == (1, 0)


def test_annotator_whose_lease_lapsed_gets_the_same_assignment_back(api, annotator):
    open_round(n=1, overlap=1)
    held = lease(api(annotator))
    Assignment.objects.filter(pk=held["assignment"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    ComparisonTask.objects.update(leases_expire_at=timezone.now() - timedelta(seconds=1))
    again = lease(api(annotator))
    assert again["assignment"] == held["assignment"]
    assert Assignment.objects.get(pk=held["assignment"]).lease_expires_at > timezone.now()


def test_skip_frees_the_slot_and_is_not_offered_again(api, annotator, annotator2):
    open_round(n=1, overlap=1)
    client = api(annotator)
    held = lease(client)
    response = client.post(
        skip_url(held["assignment"]), {"reason": "not my language"}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {"assignment": held["assignment"], "status": "skipped"}
    assert (
        client.post(skip_url(held["assignment"]), {"reason": "again"}, format="json").status_code
        == 200
    )
    assert lease(client) is None
    assert lease(api(annotator2))["task"] == held["task"]
    assert Assignment.objects.get(pk=held["assignment"]).skip_reason == "not my language"


def test_skip_needs_a_reason(api, annotator):
    open_round(n=1)
    held = lease(api(annotator))
    response = api(annotator).post(skip_url(held["assignment"]), {"reason": ""}, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"reason": ["This field may not be blank."]}
    response = api(annotator).post(skip_url(held["assignment"]), {}, format="json")
    assert response.json()["fields"] == {"reason": ["This field is required."]}


def test_closed_round_hands_out_nothing_but_accepts_held_work(api, admin, annotator, annotator2):
    round_ = open_round(n=2, overlap=1)
    held = lease(api(annotator))
    response = api(admin).post(f"/api/v1/rounds/{round_.pk}/close/")
    assert response.status_code == 200 and response.json()["status"] == "closed"
    assert lease(api(annotator2)) is None
    response = api(annotator).post(submit_url(held["assignment"]), valid_body(held), format="json")
    assert response.status_code == 200


def test_periodic_sweep_reclaims_lapsed_leases(api, annotator):
    open_round(n=2, overlap=1)
    held = lease(api(annotator))
    later = timezone.now() + timedelta(hours=1)
    assert leases_expire(now=later) == 1
    assert Assignment.objects.get(pk=held["assignment"]).status == Assignment.Status.EXPIRED
    assert ComparisonTask.objects.get(pk=held["task"]).leased_count == 0
    assert leases_expire(now=later) == 0


def test_lease_query_count_is_pinned(api, annotator, django_assert_num_queries):
    open_round(n=5)
    client = api(annotator)
    rubrics_read()
    if connection.vendor == "postgresql" and settings.HOT_PATH_IN_DATABASE:
        # the token with its user and roles, then one call of annotation_lease: the lock, the
        # rate limit, the held lease, the candidate, the assignment and its slot, the content.
        with django_assert_num_queries(2):
            task = lease(client)
        with django_assert_num_queries(2):
            assert lease(client)["assignment"] == task["assignment"]
        return
    # token with user and roles, the rate limit's log (one conditional insert), the held-lease
    # probe, the candidate locked with its prompt and slots, the assignment inserted and its
    # slot counted (one statement on PostgreSQL, two on SQLite); plus the savepoint pair of the
    # lease's transaction (in a test, every transaction is nested in the test's own).
    # PostgreSQL adds the rate limit's advisory lock, which is the annotator's lock too.
    postgresql = connection.vendor == "postgresql"
    with django_assert_num_queries(8):
        task = lease(client)
    # Holding one: the rate limit's, the probe finds it, it is read, then its task.
    with django_assert_num_queries(7 + postgresql):
        assert lease(client)["assignment"] == task["assignment"]


def test_submit_query_count_is_pinned(api, annotator, django_assert_num_queries):
    open_round(n=5)
    client = api(annotator)
    task = lease(client)
    # token, the assignment with its round, rubric and completion ids; then on PostgreSQL one
    # call of annotation_submit. From Python: the task's slot moved, the assignment moved and
    # the judgment inserted (one statement on PostgreSQL, two on SQLite); plus the savepoint
    # pair.
    postgresql = connection.vendor == "postgresql"
    rubrics_read()
    expected = 3 if postgresql and settings.HOT_PATH_IN_DATABASE else 7 - postgresql
    with django_assert_num_queries(expected):
        response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
    assert response.status_code == 200


def test_round_state_visible_in_progress(api, admin, annotator):
    round_ = open_round(n=2, overlap=1)
    task = lease(api(annotator))
    api(annotator).post(submit_url(task["assignment"]), valid_body(task), format="json")
    progress = api(admin).get(f"/api/v1/rounds/{round_.pk}/").json()["progress"]
    assert progress == {
        "tasks": 2, "complete": 1, "judgments": 1, "target": 2, "leased": 0, "gold_tasks": 0,
        "gold_judgments": 0,
    }  # fmt: skip
    assert Round.objects.get().status == "open"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_opening_a_round_refreshes_the_planner_statistics_of_the_lease_tables(postgres, api):
    from django.db import connection

    def analyzed_at() -> dict[str, object]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname IN "
                "('annotation_comparisontask', 'annotation_assignment', "
                "'annotation_taskcompletion')"
            )
            return dict(cursor.fetchall())

    before = timezone.now()
    open_round(n=300, k=3, overlap=2)
    # The bulk insert of 300 tasks and 900 slots was sampled by an ANALYZE (not autovacuum's,
    # which sets last_autoanalyze) once it committed: the lease query is planned for the tables
    # as they are.
    stamps = analyzed_at()
    assert len(stamps) == 3
    assert all(at is not None and at >= before for at in stamps.values()), stamps


def test_a_round_of_higher_priority_is_handed_out_first(api, admin, annotator, annotator2):
    older = open_round(n=2, overlap=2, seed=1)
    newer = open_round(n=2, seed=2)
    assert older.priority == newer.priority == 0
    # Equal priorities: the oldest task first; judged once, it is the nearest completion.
    started = lease(api(annotator))
    assert started["round"] == older.number
    api(annotator).post(submit_url(started["assignment"]), valid_body(started), format="json")
    url = f"/api/v1/rounds/{newer.pk}/"
    bad = api(admin).patch(url, {"priority": 101}, format="json")
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"priority"}
    changed = api(admin).patch(url, {"priority": 5}, format="json")
    assert changed.status_code == 200 and changed.json()["priority"] == 5
    assert set(ComparisonTask.objects.filter(round=newer).values_list("priority", flat=True)) == {5}
    # The newer round's tasks now go first, even before the older round's task that is nearest
    # completion (which only orders tasks of equal priority).
    assert lease(api(annotator2))["round"] == newer.number
