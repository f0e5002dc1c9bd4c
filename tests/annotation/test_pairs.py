"""Pair expansion, property-based: no pair holds a tie, and the count is C(K,2) minus the ties."""

from __future__ import annotations

from math import comb

from hypothesis import given
from hypothesis import strategies as st

from annotation.pairs import ranking_cuts


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


def cuts(ranking, strength_margin, scores=None):
    return ranking_cuts(ranking, strength_margin=strength_margin, scores=scores or {},
                        scale_width=6.0)  # fmt: skip


@given(rankings(), st.sampled_from([None, 0.0, 0.3333, 0.6667, 1.0]))
def test_pairs_never_contain_a_tie_and_count_is_untied_pairs(ranking, strength):
    pairs = cuts(ranking, strength)
    k = sum(len(group) for group in ranking)
    assert len(pairs) == comb(k, 2) - sum(comb(len(group), 2) for group in ranking)
    group_of = {cid: i for i, group in enumerate(ranking) for cid in group}
    for chosen, rejected, chosen_rank, _, margin in pairs:
        assert group_of[chosen] < group_of[rejected]
        assert chosen_rank == group_of[chosen] + 1
        assert 0.0 <= margin <= 1.0
    assert len({(chosen, rejected) for chosen, rejected, *_ in pairs}) == len(pairs)


def test_strength_sets_the_top_pair_and_scores_set_the_rest():
    scores = {
        "1": {"helpful": 7, "honest": 7, "harmless": 7},
        "2": {"helpful": 4, "honest": 4, "harmless": 4},
        "3": {"helpful": 1, "honest": 1, "harmless": 1},
    }
    pairs = {(c, r): m for c, r, _, _, m in cuts([[1], [2], [3]], 0.6667, scores)}
    assert pairs == {(1, 2): 0.6667, (1, 3): 1.0, (2, 3): 0.5}


def test_scores_that_contradict_the_ranking_give_margin_zero():
    scores = {"1": {"helpful": 1}, "2": {"helpful": 7}, "3": {"helpful": 7}}
    pairs = cuts([[1], [2], [3]], None, scores)
    assert [margin for *_, margin in pairs] == [0.0, 0.0, 0.0]


def test_a_tie_at_the_top_uses_scores_not_strength():
    pairs = cuts([[1, 2], [3]], 1.0)
    assert [(c, r, m) for c, r, _, _, m in pairs] == [(1, 3, 0.0), (2, 3, 0.0)]
