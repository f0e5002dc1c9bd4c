"""A task shows its K completions in an order shuffled once, when the round is opened (imported
completions) or its task published (generated ones): not the order they were imported or
sampled in, so that position bias does not line up with the source, and the same order every
time the task is shown, to every annotator."""

from __future__ import annotations

import json

from annotation.models import ComparisonTask
from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import Completion
from feedback.serving import synthetic
from feedback.serving.backends import Sampling

from .helpers import lease, submit_url, valid_body

K = 3


def shown_orders(client) -> dict[int, list[int]]:
    """Lease and submit until no task is left; each task's completion ids in the order shown."""
    orders = {}
    while (task := lease(client)) is not None:
        again = lease(client)  # asking again while holding the lease: the same task, same order
        assert again["assignment"] == task["assignment"]
        assert again["completions"] == task["completions"]
        orders[task["task"]] = [c["id"] for c in task["completions"]]
        response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
        assert response.status_code == 200, response.content
    return orders


def test_imported_completions_are_shown_in_a_shuffled_order_fixed_for_everyone(
    api, admin, annotator, annotator2
):
    n = 30
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
        "/api/v1/rounds/", {"source": "imported", "k": K, "overlap": 2, "seed": 11}, format="json"
    )
    assert response.status_code == 201, response.content

    first = shown_orders(api(annotator))
    second = shown_orders(api(annotator2))
    assert len(first) == n and second == first  # fixed: both annotators see the same order
    imported: dict[int, list[int]] = {}  # task id: its prompt's completions as imported
    for task_id, completion_id in Completion.objects.order_by("id").values_list(
        "prompt__tasks", "id"
    ):
        imported.setdefault(task_id, []).append(completion_id)
    # Shuffled: a task keeps the imported order by chance one time in K! = 6 (5 of 30 expected;
    # half or more has odds under 1e-5), and the first imported completion lands at every
    # position (missing one of the three has odds of 3 * (2/3)^30, about 1e-5).
    unshuffled = [p for p, order in first.items() if order == imported[p]]
    assert len(unshuffled) < n / 2, f"{len(unshuffled)} of {n} tasks in imported order"
    positions = {order.index(imported[p][0]) for p, order in first.items()}
    assert positions == set(range(K))


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
