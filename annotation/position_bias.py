"""Position bias: does where a completion is shown change how often it is ranked first?

Each assignment shows a task's completions in an order of its own (``distribution``), kept with
the judgment as ``Judgment.display_order``. Per round, this counts the judgments whose single
best completion was shown at each position (1 = shown first) and gives each position's share of
first places with Wilson's 95% interval (``quality.wilson_estimate``). Without bias every
position's share is 1/K: an interval that leaves out 1/K says the position is favoured (or
shunned) beyond chance. Because orders are shuffled per assignment, independently of which
completion is better, a bias shows up here instead of pushing one completion's consensus.

Left out, and counted: judgments that tie several completions for first (no single first
place), and judgments with no recorded order that fits their ranking. The intervals treat
judgments as independent; an annotator's judgments are not quite, so they are a little narrow.
Read-only: a selector over judgments, streamed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .models import Judgment
from .quality import NOTHING, Estimate, wilson_estimate

CHUNK_SIZE = 2000


@dataclass(frozen=True)
class PositionShare:
    position: int  # 1-based: 1 is the completion shown first
    firsts: int  # judgments ranking the completion shown here alone in first place
    share: Estimate  # firsts / the round's counted judgments, Wilson 95% interval
    expected: float  # 1/K, the share without bias

    @property
    def biased(self) -> bool:
        """Whether the 95% interval leaves out the share expected without bias."""
        low, high = self.share.low, self.share.high
        return low is not None and high is not None and not low <= self.expected <= high


@dataclass(frozen=True)
class RoundPositionBias:
    round: int
    k: int  # completions per task: positions 1..k
    judgments: int  # counted: a single first place and a recorded order
    tied_first: int  # left out: several completions tied for first
    unrecorded: int  # left out: no display order that fits the ranking
    positions: list[PositionShare]


def _first_position(ranking: list[list[int]], order: list[int]) -> int | None:
    """The 1-based position the single best completion was shown at, or None."""
    if not ranking or len(ranking[0]) != 1 or ranking[0][0] not in order:
        return None
    return order.index(ranking[0][0]) + 1


def position_bias_by_round(*, rounds: list[int] | None = None) -> list[RoundPositionBias]:
    """Share of first places by displayed position, per round (``rounds`` by ``Round.number``;
    empty or None: every round), in round order. Rounds without judgments are left out."""
    judgments = Judgment.objects.all()
    if rounds:
        judgments = judgments.filter(task__round__number__in=rounds)
    rows = (
        judgments.order_by()
        .values_list("task__round__number", "task__round__k", "ranking", "display_order")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    ks: dict[int, int] = {}
    firsts: dict[int, Counter[int]] = {}
    tied: Counter[int] = Counter()
    unrecorded: Counter[int] = Counter()
    for number, k, ranking, order in rows:
        ks[number] = k
        counts = firsts.setdefault(number, Counter())
        position = _first_position(ranking, order)
        if position is not None:
            counts[position] += 1
        elif ranking and len(ranking[0]) > 1:
            tied[number] += 1
        else:
            unrecorded[number] += 1
    return [
        _round_bias(number, ks[number], firsts[number], tied[number], unrecorded[number])
        for number in sorted(firsts)
    ]


def _round_bias(
    number: int, k: int, firsts: Counter[int], tied: int, unrecorded: int
) -> RoundPositionBias:
    n = sum(firsts.values())
    k = max([k, *firsts])  # a task with more completions than the round's k still shows them
    return RoundPositionBias(
        round=number,
        k=k,
        judgments=n,
        tied_first=tied,
        unrecorded=unrecorded,
        positions=[
            PositionShare(
                position=p,
                firsts=firsts[p],
                share=wilson_estimate(firsts[p], n) if n else NOTHING,
                expected=1 / k,
            )
            for p in range(1, k + 1)
        ],
    )
