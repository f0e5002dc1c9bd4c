"""Consensus of several annotators on one task: a Bradley-Terry model over their rankings.

When a task is judged by several annotators, training on each judgment's pairs separately
teaches the model every disagreement as a fact (a pair and its reverse, both with full margin).
Instead the task's judgments are combined into one consensus first.

Why Bradley-Terry rather than majority vote: majority decides each pair on its own, so two
annotators who disagree give a tie, and three can give a cycle (a > b > c > a) that no ranking
agrees with. Bradley-Terry (the model a reward model itself is trained under) fits one strength
per completion to all the pairwise outcomes at once, so it always yields an ordering; the fitted
probability ``P(a beats b) = s_a / (s_a + s_b)`` says how sure the annotators are together, which
becomes the pair's margin; and an annotator's weight (trust) enters as a fractional count.

Fitting is Hunter's MM algorithm (2004), a dozen lines: a task has at most nine completions and a
handful of judgments, so a dependency (and a solver) would buy nothing. Each compared pair gets
``prior`` virtual wins each way (a Beta prior), so a unanimous ranking has finite strengths and
two annotators who agree are more certain than one.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Strengths whose logs differ by less than this are a tie in the consensus ordering.
TIE_TOLERANCE = 1e-6


def bradley_terry(
    items: Sequence[int],
    outcomes: Iterable[tuple[int, int, float]],
    *,
    prior: float = 0.5,
    iterations: int = 500,
    tolerance: float = 1e-10,
) -> dict[int, float]:
    """Bradley-Terry strengths of ``items`` from weighted ``(winner, loser, weight)`` outcomes
    (a tie is half a win each way), normalised to a geometric mean of 1.

    MM update: ``s_i ← W_i / Σ_j n_ij / (s_i + s_j)``, with ``W_i`` the weighted wins of i and
    ``n_ij`` the weighted comparisons of i with j, both including the prior. Items never compared
    with anything keep strength 1."""
    wins: dict[int, float] = defaultdict(float)
    games: dict[tuple[int, int], float] = defaultdict(float)
    for winner, loser, weight in outcomes:
        wins[winner] += weight
        games[min(winner, loser), max(winner, loser)] += weight
    for a, b in list(games):
        wins[a] += prior
        wins[b] += prior
        games[a, b] += 2 * prior
    opponents: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (a, b), n in games.items():
        opponents[a].append((b, n))
        opponents[b].append((a, n))
    strength = dict.fromkeys(items, 1.0)
    for _ in range(iterations):
        updated = {
            i: wins[i] / sum(n / (strength[i] + strength[j]) for j, n in opponents[i])
            if opponents[i]
            else 1.0
            for i in items
        }
        scale = math.exp(sum(math.log(s) for s in updated.values()) / max(1, len(updated)))
        updated = {i: s / scale for i, s in updated.items()}
        change = max(abs(updated[i] - strength[i]) for i in items) if items else 0.0
        strength = updated
        if change < tolerance:
            break
    return strength


def ranking_outcomes(
    ranking: Sequence[Sequence[int]], weight: float = 1.0
) -> Iterable[tuple[int, int, float]]:
    """A ranking (groups best first) as pairwise outcomes: each completion beats every one in a
    later group; completions in one group tie (half a win each way)."""
    for i, better in enumerate(ranking):
        for a, b in itertools.combinations(better, 2):
            yield a, b, weight / 2
            yield b, a, weight / 2
        for worse in ranking[i + 1 :]:
            for winner in better:
                for loser in worse:
                    yield winner, loser, weight


@dataclass(frozen=True)
class Consensus:
    """One task's consensus: strengths, the ordering they give, and pair probabilities."""

    strength: dict[int, float]
    judgments: int

    def groups(self) -> list[list[int]]:
        """Completion ids best first; equal strengths share a group."""
        ordered = sorted(self.strength, key=lambda cid: (-self.strength[cid], cid))
        groups: list[list[int]] = []
        for cid in ordered:
            if (
                groups
                and abs(math.log(self.strength[groups[-1][0]]) - math.log(self.strength[cid]))
                < TIE_TOLERANCE
            ):
                groups[-1].append(cid)
            else:
                groups.append([cid])
        return groups

    def probability(self, a: int, b: int) -> float:
        """P(a is preferred to b) under the fitted model."""
        return self.strength[a] / (self.strength[a] + self.strength[b])

    def pairs(self) -> list[tuple[int, int, float]]:
        """Every pair the consensus orders, as (chosen, rejected, margin): the margin is
        ``2·P(chosen beats rejected) - 1``, so 0 is a coin flip and 1 is certainty."""
        out = []
        groups = self.groups()
        for i, better in enumerate(groups):
            for worse in groups[i + 1 :]:
                for chosen in better:
                    for rejected in worse:
                        margin = 2 * self.probability(chosen, rejected) - 1
                        out.append((chosen, rejected, round(margin, 4)))
        return out


def task_consensus(
    completions: Sequence[int],
    rankings: Iterable[tuple[Sequence[Sequence[int]], float]],
    *,
    prior: float = 0.5,
) -> Consensus:
    """The consensus of ``(ranking, annotator weight)`` judgments of one task."""
    outcomes: list[tuple[int, int, float]] = []
    count = 0
    for ranking, weight in rankings:
        outcomes.extend(ranking_outcomes(ranking, weight))
        count += 1
    return Consensus(bradley_terry(completions, outcomes, prior=prior), judgments=count)


def weighted_mean_scores(
    scores: Iterable[tuple[Mapping[str, Mapping[str, int]], float]], axis: str
) -> dict[int, float]:
    """Per completion, the weighted mean of several annotators' scores on ``axis`` (the
    consensus of ratings, for per-axis pairs)."""
    total: dict[int, float] = defaultdict(float)
    weight_sum: dict[int, float] = defaultdict(float)
    for per_completion, weight in scores:
        for cid, per_axis in per_completion.items():
            if axis in per_axis:
                total[int(cid)] += weight * per_axis[axis]
                weight_sum[int(cid)] += weight
    return {cid: total[cid] / weight_sum[cid] for cid in total if weight_sum[cid] > 0}
