"""Annotation quality: Krippendorff's alpha on published worked examples, the pair-level
measures on hand-checked rankings, and the selectors on a small judged round whose gold
accuracy, agreement and trust are worked out by hand below."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from annotation.gold import task_mark_gold
from annotation.models import Assignment, ComparisonTask, Judgment, TaskCompletion
from annotation.quality import (
    _coincidences,
    _ordinal_alpha,
    agreement_by_round,
    annotator_quality,
    annotator_trust_scores,
    disagreements,
    gold_pair_score,
    krippendorff_alpha,
    pair_directions,
    round_agreement,
    task_agreement,
    wilson_estimate,
)
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role

from ..factories import open_round

# --- Krippendorff's alpha on published examples ---------------------------------------------------

_ = None
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers,
# twelve units, values 1..5, missing values (unit 12 has a single value and is not pairable).
FOUR_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_alpha_matches_the_four_observer_example(level: str, published: float) -> None:
    """Krippendorff (2011), section C, published to three decimals: nominal .743,
    ordinal .815, interval .849, ratio .797."""
    assert round(krippendorff_alpha(FOUR_OBSERVERS, level=level), 3) == published


def test_alpha_matches_the_two_observer_examples() -> None:
    """Krippendorff (2011), section A (binary data, two observers, no missing data: alpha =
    .095) and section B (nominal data a-e, two observers: alpha = .692)."""
    binary = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    assert round(krippendorff_alpha(binary, level="nominal"), 3) == 0.095
    code = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    first, second = "aabbdcccedda", "babbbccceddd"  # one letter per unit
    nominal = [[code[v] for v in first], [code[v] for v in second]]
    assert round(krippendorff_alpha(nominal, level="nominal"), 3) == 0.692


def test_alpha_is_none_when_undefined() -> None:
    # No unit has two values; or every pairable value is the same (no variation to explain).
    assert krippendorff_alpha([[1, _, 3], [_, 2, _]], level="ordinal") is None
    assert krippendorff_alpha([[4, 4, 5], [4, 4, _]], level="interval") is None
    assert krippendorff_alpha([], level="nominal") is None
    with pytest.raises(ValueError, match="level must be one of"):
        krippendorff_alpha(FOUR_OBSERVERS, level="circular")


def test_the_bootstraps_coincidence_alpha_is_the_packages() -> None:
    """The bootstrap computes ordinal alpha from summed coincidence matrices rather than by
    calling the package 500 times; on the published example both give .815 exactly."""
    counts = np.zeros((12, 5), dtype=np.int64)
    for row in FOUR_OBSERVERS:
        for unit, value in enumerate(row):
            if value is not None:
                counts[unit, value - 1] += 1
    fast = _ordinal_alpha(_coincidences(counts)[None])[0]
    assert fast == pytest.approx(krippendorff_alpha(FOUR_OBSERVERS, level="ordinal"), abs=1e-12)


# --- Pair-level measures --------------------------------------------------------------------------


def test_pair_directions() -> None:
    assert pair_directions([[3], [1, 2]]) == {(1, 2): 0, (1, 3): -1, (2, 3): -1}
    assert pair_directions([[1], [2]]) == {(1, 2): 1}


def test_gold_pair_score_gives_half_for_a_tie() -> None:
    # Gold 1 > 2 > 3 against 2 > {1, 3}: (1,2) reversed 0, (1,3) tied 0.5, (2,3) same 1.
    assert gold_pair_score([[2], [1, 3]], [[1], [2], [3]]) == (1.5, 3)
    # Only the gold ranking's untied pairs count: gold {1, 2} > 3 has two, both matched here.
    assert gold_pair_score([[1], [2], [3]], [[1, 2], [3]]) == (2.0, 2)


def test_task_agreement_by_hand() -> None:
    # r1 = 1>2>3, r2 = 1>3>2, r3 = {1,2}>3. r1-r2: (1,2) ✓ (1,3) ✓ (2,3) ✗ = 2/3;
    # r1-r3: (1,2) tied, skipped; (1,3) ✓ (2,3) ✓ = 2/2; r2-r3: (1,3) ✓ (2,3) ✗ = 1/2. 5/7.
    assert task_agreement([[[1], [2], [3]], [[1], [3], [2]], [[1, 2], [3]]]) == pytest.approx(5 / 7)
    assert task_agreement([[[1], [2]]]) is None
    assert task_agreement([[[1, 2]], [[1], [2]]]) is None


def test_wilson_interval_by_hand() -> None:
    # 12 of 18, z = 1.96: centre (p + z²/2n)/(1 + z²/n) = .6374, half-width .1999.
    estimate = wilson_estimate(12, 18)
    assert (round(estimate.low, 4), round(estimate.high, 4)) == (0.4375, 0.8372)
    assert wilson_estimate(0, 0).value is None


# --- Selectors on a judged round ------------------------------------------------------------------


def judge(task_id: int, user: Any, ranking: list[list[int]]) -> None:
    """Write a submitted judgment straight to the tables (setup for read-only selectors). Every
    axis is scored 7, 4, 1 by rank position, so the scores order the completions as the ranking."""
    now = timezone.now()
    task = ComparisonTask.objects.select_related("round").get(pk=task_id)
    assignment = Assignment.objects.create(
        task=task, annotator=user, status="submitted", leased_at=now, lease_expires_at=now
    )
    score = {cid: 7 - 3 * i for i, group in enumerate(ranking) for cid in group}
    Judgment.objects.create(
        assignment=assignment,
        task=task,
        annotator=user,
        rubric=task.round.rubric,
        ranking=ranking,
        scores={
            str(c): dict.fromkeys(("helpful", "honest", "harmless"), s) for c, s in score.items()
        },
        strength="better",
        time_spent_ms=1000,
        body_sha256="0" * 64,
    )


def completions_of(round_: Any) -> list[tuple[int, list[int]]]:
    """(task id, its completion ids in shown order) for each task of the round."""
    slots: dict[int, list[int]] = {}
    for task_id, cid in (
        TaskCompletion.objects.filter(task__round=round_)
        .order_by("task_id", "position")
        .values_list("task_id", "completion_id")
    ):
        slots.setdefault(task_id, []).append(cid)
    return sorted(slots.items())


@pytest.fixture
def judged(postgres: None, annotator: Any, annotator2: Any, make_user: Any) -> dict[str, Any]:
    """Round 1 (K = 3): a gold task G, T1 (all agree), T2 (c reverses a and b), T3 (judged
    once). Round 2: two tasks all three rank and score alike."""
    a, b, c = annotator, annotator2, make_user(Role.ANNOTATOR, username="ann3")
    first = open_round(n=4, k=3, overlap=3)
    (gold, (x, y, z)), (t1, ids1), (t2, ids2), (t3, ids3) = completions_of(first)
    task_mark_gold(task_id=gold, ranking=[[x], [y], [z]])
    judge(gold, a, [[x], [y], [z]])
    judge(gold, b, [[x], [y, z]])
    judge(gold, c, [[z], [y], [x]])
    for user in (a, b, c):
        judge(t1, user, [[cid] for cid in ids1])
    judge(t2, a, [[cid] for cid in ids2])
    judge(t2, b, [[cid] for cid in ids2])
    judge(t2, c, [[cid] for cid in ids2[::-1]])
    judge(t3, a, [[cid] for cid in ids3])
    second = open_round(n=2, k=3, overlap=3)
    for task_id, ids in completions_of(second):
        for user in (a, b, c):
            judge(task_id, user, [[cid] for cid in ids])
    return {"a": a.pk, "b": b.pk, "c": c.pk, "t1": t1, "t2": t2, "rounds": (1, 2)}


def test_annotator_quality_by_hand(judged: dict[str, Any], settings: Any) -> None:
    """Gold G is x > y > z: a matches it (3/3); b ties y and z (1 + 1 + 0.5 = 2.5/3); c reverses
    it (0/3). Leave-one-out agreement: on T1 everyone's two peers agree with them (3/3 each); on
    T2, a's peers are b (same) and c (reversed), whose consensus ties every pair: no evidence,
    and likewise for b; c's peers a and b agree and c reverses them: 0/3. T3 has one judgment.
    Trust = (2·gold hits + agreement hits + 2) / (2·gold pairs + agreement pairs + 4):
    a (6 + 3 + 2)/(6 + 3 + 4) = 11/13, b (5 + 3 + 2)/13 = 10/13, c (0 + 3 + 2)/(6 + 6 + 4) = 5/16."""
    a, b, c = judged["a"], judged["b"], judged["c"]
    quality = annotator_quality(rounds=[1])
    assert set(quality) == {a, b, c}
    expected = {
        #    judgments, gold pairs, gold hits, agreement pairs, agreement hits, trust
        a: (4, 3, 3.0, 3, 3.0, 11 / 13),
        b: (3, 3, 2.5, 3, 3.0, 10 / 13),
        c: (3, 3, 0.0, 6, 3.0, 5 / 16),
    }
    for uid, (judgments, gold_pairs, gold_hits, pairs, hits, trust) in expected.items():
        q = quality[uid]
        assert (q.judgments, q.gold_judgments, q.gold_pairs, q.gold_hits) == (
            judgments, 1, gold_pairs, gold_hits,
        )  # fmt: skip
        assert (q.agreement_pairs, q.agreement_hits) == (pairs, hits)
        assert q.trust == pytest.approx(trust)
        assert q.gold_accuracy.value == pytest.approx(gold_hits / gold_pairs)
        assert q.agreement.value == pytest.approx(hits / pairs)
        assert q.gold_accuracy.low <= q.gold_accuracy.value <= q.gold_accuracy.high
    # c is below 0.6 but has 3 + 6 = 9 pairs of evidence, one short of the default 10.
    assert not any(q.flagged for q in quality.values())
    settings.TRUST_MIN_PAIRS = 9
    assert {uid for uid, q in annotator_quality(rounds=[1]).items() if q.flagged} == {c}
    # Round 2 alone: no gold, 2 tasks x 3 agreeing pairs: (6 + 2)/(6 + 4) for everyone.
    assert annotator_trust_scores(rounds=[2]) == {a: 0.8, b: 0.8, c: 0.8}
    both = annotator_trust_scores()
    assert both[a] == pytest.approx((6 + 9 + 2) / (6 + 9 + 4))


def test_round_agreement_by_hand(judged: dict[str, Any]) -> None:
    """Round 1's pairwise agreement rests on T1 and T2 (G is gold, T3 judged once): T1 gives
    3 judgment pairs x 3 completion pairs, all agreeing (9/9); T2 gives a-b 3/3, a-c and b-c
    0/3 each: 12/18 in all. Its alpha is the package's on the (task, completion) units."""
    agreement = round_agreement(round_number=1, bootstrap=200)
    assert (agreement.round, agreement.tasks, agreement.judgments, agreement.annotators) == (
        1, 2, 10, 3,
    )  # fmt: skip
    assert agreement.pairwise.n == 18
    assert agreement.pairwise.value == pytest.approx(12 / 18)
    assert (round(agreement.pairwise.low, 4), round(agreement.pairwise.high, 4)) == (0.4375, 0.8372)
    # Units T1's and T2's completions, in shown order; c ranks T2 backwards.
    ranks = [[1, 2, 3, 1, 2, 3], [1, 2, 3, 1, 2, 3], [1, 2, 3, 3, 2, 1]]
    expected = krippendorff_alpha(ranks, level="ordinal")
    assert agreement.ranking_alpha.value == pytest.approx(expected)
    assert agreement.ranking_alpha.n == 6
    assert agreement.ranking_alpha.low <= expected <= agreement.ranking_alpha.high
    # Scores 7/4/1 by position order the units exactly as the ranks do: the same ordinal alpha.
    assert set(agreement.axis_alpha) == {"helpful", "honest", "harmless"}
    assert agreement.axis_alpha["helpful"].value == pytest.approx(expected)
    # Seeded: the same interval again.
    assert round_agreement(round_number=1, bootstrap=200).ranking_alpha == agreement.ranking_alpha

    unanimous = round_agreement(round_number=2, bootstrap=50)
    assert unanimous.ranking_alpha.value == 1.0
    assert (unanimous.ranking_alpha.low, unanimous.ranking_alpha.high) == (1.0, 1.0)
    assert unanimous.axis_alpha["harmless"].value == 1.0
    assert unanimous.pairwise.value == 1.0
    without_interval = round_agreement(round_number=2, bootstrap=0).ranking_alpha
    assert (without_interval.value, without_interval.low) == (1.0, None)

    assert [r.round for r in agreement_by_round(bootstrap=0)] == [1, 2]
    with pytest.raises(DomainError, match="No round 9"):
        round_agreement(round_number=9)


def test_disagreements_put_the_split_task_first(judged: dict[str, Any]) -> None:
    # T2 agrees on 3 of 9 comparisons, T1 on all; gold G and the singly judged T3 are left out.
    found = disagreements(rounds=[1])
    assert [(d.task_id, d.round, d.judgments) for d in found] == [
        (judged["t2"], 1, 3), (judged["t1"], 1, 3),
    ]  # fmt: skip
    assert [d.agreement for d in found] == pytest.approx([1 / 3, 1.0])
    assert [d.task_id for d in disagreements(limit=1)] == [judged["t2"]]
    assert len(disagreements()) == 4  # round 2's two unanimous tasks join at agreement 1
