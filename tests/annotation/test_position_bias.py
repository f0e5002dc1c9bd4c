"""Position bias as a researcher sees it: the order each annotator was shown in the raw export,
and the dashboard's share of first places by displayed position with Wilson's 95% interval."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from annotation.models import Assignment, ComparisonTask, Judgment
from annotation.position_bias import position_bias_by_round

from ..factories import UserFactory, open_round
from .helpers import lease, submit_url, valid_body

pytestmark = pytest.mark.django_db
K = 4
# Which displayed position (1-based) the single best answer was shown at, in 100 judgments.
WINS = {1: 40, 2: 25, 3: 20, 4: 15}
TIED = 3  # judgments more, tying two answers for first: left out of the shares


def test_the_raw_export_carries_the_order_each_annotator_was_shown(
    api, annotator, annotator2, researcher
):
    open_round(n=2, k=K, overlap=2, seed=5)
    shown: dict[str, list[int]] = {}
    for who in (annotator, annotator2):
        client = api(who)
        while (task := lease(client)) is not None:
            shown[task["assignment"]] = [c["id"] for c in task["completions"]]
            response = client.post(submit_url(task["assignment"]), valid_body(task), format="json")
            assert response.status_code == 200, response.content
    response = api(researcher).get("/api/v1/exports/preferences/", {"format": "judgments"})
    assert response.status_code == 200
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert {row["assignment_id"]: row["display_order"] for row in rows} == shown
    # What the annotator ranked first is the first answer they were shown (valid_body ranks in
    # shown order), which the export says; the task's own positions need not agree.
    assert all(row["ranking"][0] == [row["display_order"][0]] for row in rows)


def judgments_with_known_first_places() -> None:
    """Setup, not a code path: 103 judgments written straight to the tables, each shown in its
    task's position order, their best answer at the position ``WINS`` and ``TIED`` say."""
    round_ = open_round(n=sum(WINS.values()) + TIED, k=K, overlap=1, seed=2)
    user = UserFactory()
    now = timezone.now()
    tasks = list(ComparisonTask.objects.filter(round=round_).order_by("pk"))
    wins = [position for position, count in WINS.items() for _ in range(count)]
    for i, task in enumerate(tasks):
        order = list(task.slots.order_by("position").values_list("completion_id", flat=True))
        if i < len(wins):
            best = order[wins[i] - 1]
            ranking = [[best]] + [[cid] for cid in order if cid != best]
        else:
            ranking = [sorted(order[:2]), [order[2]], [order[3]]]
        assignment = Assignment.objects.create(
            task=task, annotator=user, status="submitted", leased_at=now, lease_expires_at=now,
            display_order=order,
        )  # fmt: skip
        Judgment.objects.create(
            assignment=assignment, task=task, annotator=user, rubric=round_.rubric,
            ranking=ranking, scores={}, time_spent_ms=1, body_sha256="x" * 64,
            display_order=order,
        )  # fmt: skip


def test_first_places_by_displayed_position_with_wilson_intervals(client, researcher):
    judgments_with_known_first_places()
    (bias,) = position_bias_by_round()
    assert (bias.k, bias.judgments, bias.tied_first, bias.unrecorded) == (K, 100, TIED, 0)
    # Wilson's score interval by hand, z = 1.959964: for 40 of 100,
    # centre (0.40 + z²/200) / (1 + z²/100) = 0.403695 and half-width
    # z·sqrt(0.40·0.60/100 + z²/40000) / (1 + z²/100) = 0.094298.
    by_hand = {1: (0.3094, 0.4980), 2: (0.1755, 0.3430), 3: (0.1334, 0.2888), 4: (0.0931, 0.2328)}
    for share in bias.positions:
        assert share.firsts == WINS[share.position]
        assert share.share.value == WINS[share.position] / 100
        assert (round(share.share.low, 4), round(share.share.high, 4)) == by_hand[share.position]
        # 1/4 lies outside the intervals of positions 1 and 4 only.
        assert share.biased == (share.position in (1, 4))

    client.force_login(researcher)
    page = client.get("/research/").content.decode()
    table = page[
        page.index('id="position-bias"') : page.index("</table>", page.index("position-bias"))
    ]
    dash = "\N{EN DASH}"
    for text in (f"40% [31{dash}50]", f"25% [18{dash}34]", f"20% [13{dash}29]", f"15% [9{dash}23]",
                 "<td>25%</td>"):  # fmt: skip
        assert text in table
    assert "3 tied for first" in table and table.count("beyond chance") == 2
