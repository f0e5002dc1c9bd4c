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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    chosen: int
    rejected: int
    chosen_rank: int  # 1-based group index; tied completions share a rank
    rejected_rank: int
    margin: float


def _mean_score(scores: Mapping[str, Mapping[str, int]], cid: int) -> float | None:
    per_axis = scores.get(str(cid))
    if not per_axis:
        return None
    return sum(per_axis.values()) / len(per_axis)


def ranking_to_pairs(
    ranking: Sequence[Sequence[int]],
    *,
    strength_margin: float | None = None,
    scores: Mapping[str, Mapping[str, int]] | None = None,
    scale_width: float = 6.0,
) -> list[Pair]:
    scores = scores or {}
    top_is_single = bool(ranking) and len(ranking[0]) == 1
    pairs: list[Pair] = []
    for i, better in enumerate(ranking):
        for j in range(i + 1, len(ranking)):
            for chosen in better:
                for rejected in ranking[j]:
                    if i == 0 and j == 1 and top_is_single and strength_margin is not None:
                        margin = strength_margin
                    else:
                        high, low = _mean_score(scores, chosen), _mean_score(scores, rejected)
                        gap = (
                            (high - low) / scale_width
                            if high is not None and low is not None
                            else 0.0
                        )
                        margin = round(max(0.0, gap), 4)
                    pairs.append(Pair(chosen, rejected, i + 1, j + 1, margin))
    return pairs
