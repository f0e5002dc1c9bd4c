"""The order an annotator is shown a task's completions in. A task's positions are shuffled once,
when the round is opened (imported completions) or its task published (generated ones), so that
they do not follow the order completions were imported or sampled in; and each assignment then
shows them in an order of its own (``assignment_display_order``: keyed by the round, the task and
the annotator), the same every time it is asked for, stored with the judgment. Without the
per-assignment shuffle every annotator would see a task the same way and a reader's bias toward
the first answer would push one completion's consensus:
``test_each_annotator_sees_an_order_of_their_own_derived_from_the_round_seed`` then fails."""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from annotation.distribution import assignment_display_order, leases_expire
from annotation.models import Assignment, ComparisonTask, Judgment
from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import Completion
from feedback.serving import synthetic
from feedback.serving.backends import Sampling

from .helpers import lease, submit_url, valid_body

K = 3
SEED = 11


def shown_orders(client) -> dict[int, list[int]]:
    """Lease and submit until no task is left; each task's completion ids in the order shown,
    checked to be the order stored on the assignment and then on the judgment."""
    orders = {}
    while (task := lease(client)) is not None:
        again = lease(client)  # asking again while holding the lease: the same task, same order
        assert again["assignment"] == task["assignment"]
        assert again["completions"] == task["completions"]
        shown = [c["id"] for c in task["completions"]]
        assert Assignment.objects.get(pk=task["assignment"]).display_order == shown
        orders[task["task"]] = shown
        response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
        assert response.status_code == 200, response.content
        assert response.json()["display_order"] == shown  # kept with what was decided
        assert Judgment.objects.get(assignment_id=task["assignment"]).display_order == shown
    return orders


def imported_round(api, admin, n: int, overlap: int) -> None:
    lines = "\n".join(
        json.dumps({"prompt": f"What is {i} + {i}?",
                    "completions": [{"text": f"Answer {j} to {i}", "model": "m"} for j in range(K)]})
        for i in range(n)
    )  # fmt: skip
    response = api(admin).post(
        "/api/v1/prompts/import/", lines, content_type="application/x-ndjson"
    )
    assert response.status_code == 201, response.content
    response = api(admin).post(
        "/api/v1/rounds/",
        {"source": "imported", "k": K, "overlap": overlap, "seed": SEED},
        format="json",
    )
    assert response.status_code == 201, response.content


def positions(task_id: int) -> list[int]:
    task = ComparisonTask.objects.get(pk=task_id)
    return list(task.slots.order_by("position").values_list("completion_id", flat=True))


def test_the_display_order_is_a_stable_seeded_shuffle():
    # Pinned: the same inputs give this order in every process and Python version (each id is
    # keyed by a SHA-256 of the round seed, task, annotator and itself), so a stored order can be
    # recomputed from the data; PostgreSQL's lease computes the same (the next test compares).
    ids = [101, 102, 103, 104]
    assert assignment_display_order(seed=11, task_id=7, annotator_id=2, completion_ids=ids) == [
        103, 102, 104, 101,
    ]  # fmt: skip
    assert assignment_display_order(seed=11, task_id=7, annotator_id=3, completion_ids=ids) == [
        101, 104, 102, 103,
    ]  # fmt: skip


def test_each_annotator_sees_an_order_of_their_own_derived_from_the_round_seed(
    api, admin, annotator, annotator2
):
    n = 30
    imported_round(api, admin, n=n, overlap=2)
    first = shown_orders(api(annotator))
    second = shown_orders(api(annotator2))
    assert len(first) == n and set(second) == set(first)
    for who, shown in ((annotator, first), (annotator2, second)):
        assert shown == {
            task_id: assignment_display_order(
                seed=SEED, task_id=task_id, annotator_id=who.pk, completion_ids=positions(task_id)
            )
            for task_id in shown
        }
    # Two annotators see a task the same way by chance one time in K! = 6 (5 of 30 expected;
    # half or more has odds under 1e-5). Without the per-assignment shuffle it would be all 30.
    same = [t for t in first if first[t] == second[t]]
    assert len(same) < n / 2, f"{len(same)} of {n} tasks shown alike to both annotators"

    imported: dict[int, list[int]] = {}  # task id: its prompt's completions as imported
    for task_id, completion_id in Completion.objects.order_by("id").values_list(
        "prompt__tasks", "id"
    ):
        imported.setdefault(task_id, []).append(completion_id)
    # Shuffled: a task is shown in the imported order by chance one time in K! (as above), and
    # the first imported completion lands at every position (missing one of the three has odds
    # of 3 * (2/3)^30, about 1e-5).
    unshuffled = [p for p, order in first.items() if order == imported[p]]
    assert len(unshuffled) < n / 2, f"{len(unshuffled)} of {n} tasks in imported order"
    shown_at = {order.index(imported[p][0]) for p, order in first.items()}
    assert shown_at == set(range(K))


def test_a_lapsed_lease_taken_again_shows_the_same_order(api, admin, annotator):
    imported_round(api, admin, n=1, overlap=1)
    client = api(annotator)
    held = lease(client)
    later = timezone.now() + timedelta(seconds=settings.LEASE_SECONDS + 1)
    assert leases_expire(now=later) == 1  # the sweep ran while the annotator was away
    again = lease(client)
    assert again["assignment"] == held["assignment"]
    assert again["completions"] == held["completions"]


def test_generated_completions_are_published_in_a_shuffled_order(api, annotator, tiny_policy):
    from annotation.imports import prompts_import

    n = 24
    prompts_import(
        lines=[json.dumps({"prompt": q, "tags": ["shuffle"]}) for q in synthetic.prompts(n, seed=3)]
    )
    round_ = round_open_for_policy(
        k=K, overlap=1, tags=["shuffle"], sampling=Sampling(max_new_tokens=16), seed=5,
        enqueue=False,
    )  # fmt: skip
    round_generate(round_id=round_.pk)
    published = ComparisonTask.objects.filter(round=round_).count()
    assert published >= n / 2  # the rest had no K distinct answers, and were left out

    shown = shown_orders(api(annotator))
    assert len(shown) == published
    sample_index = dict(Completion.objects.values_list("id", "sample_index"))
    # Published unshuffled, every task would list its completions by sample index.
    in_sample_order = [p for p, ids in shown.items() if ids == sorted(ids, key=sample_index.get)]
    assert len(in_sample_order) < published / 2, (
        f"{len(in_sample_order)} of {published} tasks in sample order"
    )
