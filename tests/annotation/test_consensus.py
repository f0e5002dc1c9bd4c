"""Bradley-Terry consensus on cases whose answer is known: the maximum-likelihood strengths of
outcomes that match a model exactly, and what several annotators' rankings add up to."""

from __future__ import annotations

import math

import pytest

from annotation.consensus import bradley_terry, ranking_outcomes, task_consensus


def test_two_items_recover_the_observed_win_share():
    # A beat B three times in four: the MLE of P(A beats B) is 3/4 exactly (no prior).
    strength = bradley_terry([1, 2], [(1, 2, 3.0), (2, 1, 1.0)], prior=0.0)
    assert strength[1] / (strength[1] + strength[2]) == pytest.approx(0.75, abs=1e-9)


def test_outcomes_that_match_a_model_give_back_its_strengths():
    # Strengths 4 : 2 : 1, and each pair's wins exactly as that model expects them:
    # A-B 4:2 (p = 2/3), A-C 4:1 (p = 4/5), B-C 2:1 (p = 2/3). The MLE is the model itself,
    # normalised to a geometric mean of 1: (4, 2, 1) / 2.
    outcomes = [(1, 2, 4.0), (2, 1, 2.0), (1, 3, 4.0), (3, 1, 1.0), (2, 3, 2.0), (3, 2, 1.0)]
    strength = bradley_terry([1, 2, 3], outcomes, prior=0.0)
    assert [strength[i] for i in (1, 2, 3)] == pytest.approx([2.0, 1.0, 0.5], abs=1e-7)
    assert math.prod(strength.values()) == pytest.approx(1.0)


def test_a_tie_is_half_a_win_each_way():
    assert sorted(ranking_outcomes([[1, 2], [3]])) == [
        (1, 2, 0.5), (1, 3, 1.0), (2, 1, 0.5), (2, 3, 1.0),
    ]  # fmt: skip


def test_the_majority_ordering_wins_and_unanimity_is_surer():
    two_to_one = task_consensus([1, 2, 3], [([[1], [2], [3]], 1.0)] * 2 + [([[3], [2], [1]], 1.0)])
    assert two_to_one.groups() == [[1], [2], [3]]
    unanimous = task_consensus([1, 2, 3], [([[1], [2], [3]], 1.0)] * 3)
    margins = {(c, r): m for c, r, m in two_to_one.pairs()}
    sure = {(c, r): m for c, r, m in unanimous.pairs()}
    assert set(margins) == set(sure) == {(1, 2), (1, 3), (2, 3)}
    assert all(0 < margins[pair] < sure[pair] < 1 for pair in margins)
    assert sure[1, 3] > sure[1, 2]  # first against last is surer than neighbours


def test_opposite_rankings_and_a_cycle_cancel_out():
    opposite = task_consensus([1, 2, 3], [([[1], [2], [3]], 1.0), ([[3], [2], [1]], 1.0)])
    assert opposite.groups() == [[1, 2, 3]] and opposite.pairs() == []
    # a > b > c, b > c > a, c > a > b: majority vote cycles; Bradley-Terry calls it a tie.
    cycle = task_consensus(
        [1, 2, 3], [([[1], [2], [3]], 1.0), ([[2], [3], [1]], 1.0), ([[3], [1], [2]], 1.0)]
    )
    assert cycle.groups() == [[1, 2, 3]] and cycle.pairs() == []


def test_a_trusted_annotator_outweighs_two_others():
    judged = [([[1], [2]], 1.0), ([[1], [2]], 1.0), ([[2], [1]], 3.0)]
    assert task_consensus([1, 2], judged).groups() == [[2], [1]]
