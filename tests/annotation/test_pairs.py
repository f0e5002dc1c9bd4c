"""Pair expansion, property-based: no pair holds a tie, and the count is C(K,2) minus the ties."""

from __future__ import annotations

from math import comb

from hypothesis import given
from hypothesis import strategies as st

from annotation.pairs import ranking_to_pairs


@st.composite
def rankings(draw: st.DrawFn) -> list[list[int]]:
    ids = draw(st.lists(st.integers(1, 10_000), min_size=2, max_size=12, unique=True))
    groups: list[list[int]] = []
    for cid in ids:
        if groups and draw(st.booleans()) and draw(st.booleans()):
            groups[-1].append(cid)
        else:
            groups.append([cid])
    return groups


@given(rankings(), st.sampled_from([None, 0.0, 0.3333, 0.6667, 1.0]))
def test_pairs_never_contain_a_tie_and_count_is_untied_pairs(ranking, strength):
    pairs = ranking_to_pairs(ranking, strength_margin=strength)
    k = sum(len(group) for group in ranking)
    assert len(pairs) == comb(k, 2) - sum(comb(len(group), 2) for group in ranking)
    group_of = {cid: i for i, group in enumerate(ranking) for cid in group}
    for pair in pairs:
        assert group_of[pair.chosen] < group_of[pair.rejected]
        assert pair.chosen_rank == group_of[pair.chosen] + 1
        assert 0.0 <= pair.margin <= 1.0
    assert len({(p.chosen, p.rejected) for p in pairs}) == len(pairs)


def test_strength_sets_the_top_pair_and_scores_set_the_rest():
    scores = {
        "1": {"helpful": 7, "honest": 7, "harmless": 7},
        "2": {"helpful": 4, "honest": 4, "harmless": 4},
        "3": {"helpful": 1, "honest": 1, "harmless": 1},
    }
    pairs = {
        (p.chosen, p.rejected): p.margin
        for p in ranking_to_pairs([[1], [2], [3]], strength_margin=0.6667, scores=scores)
    }
    assert pairs == {(1, 2): 0.6667, (1, 3): 1.0, (2, 3): 0.5}


def test_scores_that_contradict_the_ranking_give_margin_zero():
    scores = {"1": {"helpful": 1}, "2": {"helpful": 7}, "3": {"helpful": 7}}
    pairs = ranking_to_pairs([[1], [2], [3]], strength_margin=None, scores=scores)
    assert [p.margin for p in pairs] == [0.0, 0.0, 0.0]


def test_a_tie_at_the_top_uses_scores_not_strength():
    pairs = ranking_to_pairs([[1, 2], [3]], strength_margin=1.0, scores={})
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [(1, 3, 0.0), (2, 3, 0.0)]
