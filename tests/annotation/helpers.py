"""What an annotator's client does: lease, then build a valid judgment body for what it got."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

NEXT = "/api/v1/tasks/next/"


def submit_url(assignment: str) -> str:
    return f"/api/v1/assignments/{assignment}/submit/"


def skip_url(assignment: str) -> str:
    return f"/api/v1/assignments/{assignment}/skip/"


def lease(client: APIClient) -> dict[str, Any] | None:
    response = client.post(NEXT)
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def in_task_order(task: dict[str, Any]) -> dict[str, Any]:
    """``task`` with its completions at the task's positions rather than in the order this
    annotator was shown them (each annotator is shown an order of their own): for tests in which
    several annotators must rank the same completions the same way."""
    from annotation.models import TaskCompletion

    positions = dict(
        TaskCompletion.objects.filter(task_id=task["task"]).values_list("completion_id", "position")
    )
    return {**task, "completions": sorted(task["completions"], key=lambda c: positions[c["id"]])}


def valid_body(task: dict[str, Any], *, tie_last: bool = False) -> dict[str, Any]:
    """Rank in shown order (optionally tying the last two), score every axis, say how much better."""
    ids = [c["id"] for c in task["completions"]]
    ranking = [[cid] for cid in ids]
    if tie_last and len(ids) >= 3:
        ranking = [[cid] for cid in ids[:-2]] + [sorted(ids[-2:])]
    axes = [axis["key"] for axis in task["rubric"]["axes"]]
    scores = {str(cid): {axis: 7 - min(i, 6) for axis in axes} for i, cid in enumerate(ids)}
    return {
        "ranking": ranking,
        "scores": scores,
        "strength": "better",
        "flags": [],
        "rationale": "first is clearly right",
        "time_spent_ms": 1234,
    }
