"""From one ranking to preference pairs (InstructGPT's expansion).

A ranking is a list of groups, best first; completions in one group are tied. Every completion
is preferred to every completion in every later group, so K completions ranked without ties give
C(K, 2) pairs, and each tie group of size g removes C(g, 2) of them. Tied completions make no
pair: there is no preference to learn from them.

The margin of a pair says how sure the preference is, in [0, 1]. For the best completion against
the next group it is the strength label's margin (Llama 2's four levels: 1, 2/3, 1/3, 0). For any
other pair it is the gap between the two completions' mean 3H scores, divided by the scale's
width, and floored at 0 when an annotator's scores disagree with their own ranking.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Rubric

PairCut = tuple[int, int, float]  # (chosen completion id, rejected completion id, margin)
RankedCut = tuple[int, int, int, int, float]  # (chosen, rejected, their ranks, margin)


def ranking_cuts(
    ranking: Sequence[Sequence[int]],
    *,
    strength_margin: float | None,
    scores: Mapping[str, Mapping[str, int]],
    scale_width: float,
) -> list[RankedCut]:
    """A ranking's pairs (see the module docstring) as plain tuples, (chosen, rejected, chosen
    rank, rejected rank, margin), ranks 1-based groups: an export cuts millions of pairs, and a
    dataclass per pair costs more to build than the pair does to find."""
    # Each completion's mean score once, not once per pair it is in.
    means: dict[int, float | None] = {}
    for group in ranking:
        for cid in group:
            per_axis = scores.get(str(cid))
            means[cid] = sum(per_axis.values()) / len(per_axis) if per_axis else None
    top_is_single = bool(ranking) and len(ranking[0]) == 1
    cuts = []
    for i, better in enumerate(ranking):
        for j in range(i + 1, len(ranking)):
            for chosen in better:
                high = means[chosen]
                for rejected in ranking[j]:
                    if i == 0 and j == 1 and top_is_single and strength_margin is not None:
                        margin = strength_margin
                    else:
                        low = means[rejected]
                        gap = (
                            (high - low) / scale_width
                            if high is not None and low is not None
                            else 0.0
                        )
                        margin = round(max(0.0, gap), 4)
                    cuts.append((chosen, rejected, i + 1, j + 1, margin))
    return cuts


# --- A judgment's pairs, as the exports cut them ------------------------------------------------


def score_pairs(scores: Mapping[int, float], width: float) -> list[PairCut]:
    """Every two completions whose scores differ, the higher one chosen; the margin is the
    difference over the scale's width."""
    pairs = []
    for a, b in itertools.combinations(sorted(scores), 2):
        if scores[a] == scores[b]:
            continue
        chosen, rejected = (a, b) if scores[a] > scores[b] else (b, a)
        pairs.append((chosen, rejected, round((scores[chosen] - scores[rejected]) / width, 4)))
    return pairs


def axis_width(rubric: Rubric, axis: str) -> float | None:
    """The width of a rubric axis's scale (1 for a one-point scale); None without that axis."""
    spec = next((a for a in rubric.axes if a["key"] == axis), None)
    return None if spec is None else float(spec["max"]) - float(spec["min"]) or 1.0


def judgment_ranked_pairs(
    rubric: Rubric,
    ranking: Sequence[Sequence[int]],
    scores: Mapping[str, Mapping[str, int]],
    strength: str,
    axis: str = "",
) -> list[RankedCut]:
    """One judgment's pairs with both completions' ranks (1-based groups): its ranking's
    C(K, 2) minus ties (``ranking_cuts``), or with ``axis`` those of that axis's scores
    (none when its rubric has no such axis)."""
    if axis:
        width = axis_width(rubric, axis)
        if width is None:
            return []
        scored = {int(cid): s[axis] for cid, s in scores.items() if axis in s}
        ranks = {cid: i + 1 for i, group in enumerate(ranking) for cid in group}
        return [(c, r, ranks[c], ranks[r], m) for c, r, m in score_pairs(scored, width)]
    first = rubric.axes[0]
    return ranking_cuts(
        ranking,
        strength_margin=rubric.strength_margins.get(strength),
        scores=scores,
        scale_width=float(first["max"]) - float(first["min"]),
    )
