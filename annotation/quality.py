"""How good the annotations are: agreement between annotators, and each annotator's trust.

Read-only selectors over judgments; nothing here writes. The definitions, and why each one:

**Pair directions.** A ranking (groups of completion ids, best first) says, for every two
completions a < b, +1 (a above b), -1 (a below b) or 0 (tied). Every measure below compares
rankings through these directions, so a K-way ranking is judged on all C(K, 2) of its pair
decisions, the same pairs that become training data (``annotation.pairs``).

**Krippendorff's alpha** (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"):
``1 - D_observed / D_expected``, 1 for perfect agreement, 0 for agreement at chance, negative for
systematic disagreement; it allows any number of coders, missing values and a level of
measurement. It is computed by the maintained ``krippendorff`` package. Per round, coders are
annotators and units are (task, completion) over the round's non-gold tasks judged at least
twice: for the *ranking alpha* a unit's value is the completion's rank position (1 + the index of
its group; tied completions share a value), and for each rubric axis it is the 1..7 score on that
axis. Both are ordinal: positions and scores are ordered, but the step from 1 to 2 need not equal
the step from 4 to 5. The 95% interval is a percentile bootstrap that resamples *tasks* with
replacement (a task's completions are judged together, so its units are not independent; see
Hayes & Krippendorff 2007 on bootstrapping alpha). Alpha depends on the data only through the
coincidence matrix, which is a sum over units, so each task's matrix is built once and all the
resamples are one matrix product; resamples where alpha is undefined are left out.

**Pairwise agreement** of a round: over every two judgments of the same non-gold task and every
completion pair that both order (neither tied), the share with the same direction. It is what a
reader expects "agreement" to mean, and the number a preference dataset's noise ceiling rests
on. Its 95% interval is Wilson's score interval, which stays inside [0, 1] and behaves for small
n; it treats the comparisons as independent, which pairs from one task are not, so it is
somewhat narrower than the truth.

**Gold accuracy** of an annotator: over their judgments on gold tasks (a reference ranking set
by an admin, ``annotation.gold``), each of the reference's untied pairs scores 1 when the
annotator orders it the same way, 0.5 when they tie it (no evidence either way) and 0 when they
reverse it; accuracy is the hits over the pairs.

**Agreement** of an annotator: on each non-gold task with at least two judgments, their ranking
against the Bradley-Terry consensus of the task's *other* annotators (leave-one-out, so nobody
agrees with themselves; weight 1 each), scored like gold over the consensus's ordered pairs. A
consensus that cannot order a pair (the others split evenly) gives no evidence about it.

**Trust** ``(2·gold_hits + agreement_hits + 4·0.5) / (2·gold_pairs + agreement_pairs + 4)``:
one share of agreeing pairs in [0, 1]. Gold pairs count double because the reference is ground
truth, while a consensus carries the peers' own noise; four pseudo-pairs at 0.5 shrink an
annotator with little evidence toward "unknown" instead of 0 or 1. An annotator is flagged for
review below ``settings.TRUST_REVIEW_BELOW`` once they have ``settings.TRUST_MIN_PAIRS`` pairs of
evidence. Trust is the weight an export's consensus gives an annotator (``exports.Weights``).

Judgments are streamed a chunk at a time, ordered by task so that a task's judgments come
together; only per-task and per-annotator tallies are held, never the judgments themselves (an
export of a million pairs computes trust first). ``rounds`` filters by ``Round.number``; empty
or None means every round, as in ``annotation.exports``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import krippendorff
import numpy as np
from django.conf import settings
from django.db.models import Count, QuerySet

from feedback.platform.errors import DomainError

from .consensus import task_consensus
from .models import Judgment, Round

# Trust: gold pairs count this many times a consensus pair ...
GOLD_WEIGHT = 2.0
# ... and this many pseudo-pairs, each scoring PRIOR_SCORE, stand for "not known yet".
PRIOR_PAIRS = 4
PRIOR_SCORE = 0.5
LEVELS = ("nominal", "ordinal", "interval", "ratio")
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
CHUNK_SIZE = 2000
# Bootstrap resamples are drawn this many task weights at a time, to bound memory on big rounds.
BOOTSTRAP_CELLS = 2_000_000

Ranking = Sequence[Sequence[int]]


@dataclass(frozen=True)
class Estimate:
    """A proportion or coefficient with its 95% confidence interval."""

    value: float | None  # None when there is nothing to measure
    low: float | None
    high: float | None
    n: int  # the sample it rests on: pairable units for alpha, pairs for agreement


NOTHING = Estimate(value=None, low=None, high=None, n=0)


def wilson_estimate(hits: float, n: int) -> Estimate:
    """``hits / n`` with Wilson's 95% score interval (hits may be fractional: ties score 0.5)."""
    if n <= 0:
        return NOTHING
    p = hits / n
    z2 = Z_95 * Z_95
    scale = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / scale
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / scale
    # At p = 0 (or 1) the bound is exactly 0 (or 1); rounding would put it a hair inside.
    low = 0.0 if hits <= 0 else max(0.0, centre - half)
    high = 1.0 if hits >= n else min(1.0, centre + half)
    return Estimate(value=p, low=low, high=high, n=n)


# --- Rankings compared pair by pair -------------------------------------------------------------


def _positions(ranking: Ranking) -> dict[int, int]:
    return {cid: index for index, group in enumerate(ranking) for cid in group}


def pair_directions(ranking: Ranking) -> dict[tuple[int, int], int]:
    """{(a, b) with a < b: +1 if a is ranked above b, -1 below, 0 tied}"""
    position = _positions(ranking)
    return {
        (a, b): (position[a] < position[b]) - (position[a] > position[b])
        for a, b in itertools.combinations(sorted(position), 2)
    }


def _credit(agreement: int) -> float:
    """+1 (same direction) → 1, 0 (one side tied) → 0.5, -1 (opposite) → 0."""
    return (agreement + 1) / 2


def gold_pair_score(ranking: Ranking, gold_ranking: Ranking) -> tuple[float, int]:
    """(hits, pairs): over the gold ranking's untied pairs, 1 for the same direction, 0.5 for a
    tie, 0 for the opposite. A completion the ranking leaves out counts as tied."""
    mine = pair_directions(ranking)
    hits, pairs = 0.0, 0
    for pair, direction in pair_directions(gold_ranking).items():
        if direction:
            pairs += 1
            hits += _credit(mine.get(pair, 0) * direction)
    return hits, pairs


def _agreement_counts(directions: Sequence[dict[tuple[int, int], int]]) -> tuple[int, int]:
    """(agreeing, comparable) over every two rankings and every pair both of them order."""
    agreeing = comparable = 0
    for first, second in itertools.combinations(directions, 2):
        for pair, direction in first.items():
            other = second.get(pair, 0)
            if direction and other:
                comparable += 1
                agreeing += direction == other
    return agreeing, comparable


def task_agreement(rankings: Sequence[Ranking]) -> float | None:
    """Share of agreeing directions over every two rankings of a task and every completion pair
    both order (neither tied); None with fewer than two rankings or nothing comparable."""
    agreeing, comparable = _agreement_counts([pair_directions(r) for r in rankings])
    return agreeing / comparable if comparable else None


@functools.lru_cache(maxsize=1 << 14)
def _consensus_pairs(shape: tuple[tuple[tuple[int, ...], ...], ...], k: int) -> tuple[Any, ...]:
    """The (chosen, rejected) pairs the Bradley-Terry consensus of ``shape`` orders, over
    completions 0..k-1. Cached: a fit costs a fraction of a millisecond, and across thousands of
    tasks the same few shapes of K-way rankings recur, so a trust computation over a large
    export fits each shape once."""
    consensus = task_consensus(range(k), [([list(g) for g in ranking], 1.0) for ranking in shape])
    return tuple((chosen, rejected) for chosen, rejected, _ in consensus.pairs())


def consensus_pair_score(ranking: Ranking, others: Sequence[Ranking]) -> tuple[float, int]:
    """(hits, pairs): ``ranking`` against the consensus of ``others`` (weight 1 each), over the
    pairs the consensus orders: 1 for the same direction, 0.5 for a tie, 0 for the opposite."""
    ids = sorted({cid for other in others for group in other for cid in group})
    local = {cid: i for i, cid in enumerate(ids)}
    # Relabelled in order and sorted, rankings of the same shape share one cached fit.
    shape = tuple(
        sorted(tuple(tuple(sorted(local[cid] for cid in group)) for group in o) for o in others)
    )
    position = _positions(ranking)
    hits, pairs = 0.0, 0
    for chosen, rejected in _consensus_pairs(shape, len(ids)):
        mine_chosen, mine_rejected = position.get(ids[chosen]), position.get(ids[rejected])
        pairs += 1
        if mine_chosen is None or mine_rejected is None:
            hits += 0.5
        else:
            hits += _credit((mine_chosen < mine_rejected) - (mine_chosen > mine_rejected))
    return hits, pairs


# --- Krippendorff's alpha -----------------------------------------------------------------------


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[float | None]], *, level: str
) -> float | None:
    """Alpha of a coders x units matrix (None or NaN = missing) at ``level`` (nominal, ordinal,
    interval or ratio), by the ``krippendorff`` package. None when undefined: no unit with two
    values, or no variation among the values that can be paired."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    data = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in reliability_data], dtype=float
    )
    if data.ndim != 2 or data.size == 0:
        return None
    present = ~np.isnan(data)
    if not (present.sum(axis=0) >= 2).any() or np.unique(data[present]).size < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    return value if math.isfinite(value) else None


def _coincidences(counts: np.ndarray) -> np.ndarray:
    """Krippendorff's coincidence matrix (V x V) of units given as value counts (units x V):
    each unit with m >= 2 values adds every ordered pair of its values with weight 1/(m-1)."""
    m = counts.sum(axis=1)
    counts = counts[m >= 2].astype(float)
    m = m[m >= 2]
    pairs = counts[:, :, None] * counts[:, None, :]
    pairs[:, np.arange(counts.shape[1]), np.arange(counts.shape[1])] -= counts
    return (pairs / (m - 1)[:, None, None]).sum(axis=0)


def _ordinal_alpha(o: np.ndarray) -> np.ndarray:
    """Ordinal alpha of each coincidence matrix in a stack (b x V x V), NaN where undefined.

    Ordinal distance of values c <= k: ``(n_c + ... + n_k - (n_c + n_k) / 2)²``, with n_v the
    marginals; expected coincidences ``n_c·n_k / (n - 1)`` off the diagonal (the distance is 0 on
    it), so alpha = 1 - (n - 1)·Σ o·d / Σ n_c·n_k·d."""
    n_v = o.sum(axis=1)
    cumulative = np.cumsum(n_v, axis=1)
    index = np.arange(o.shape[1])
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    between = cumulative[:, high] - cumulative[:, low] + n_v[:, low]
    distance = (between - (n_v[:, :, None] + n_v[:, None, :]) / 2) ** 2
    observed = (o * distance).sum(axis=(1, 2))
    expected = (n_v[:, :, None] * n_v[:, None, :] * distance).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - (n_v.sum(axis=1) - 1) * observed / expected


def _resampled_task_weights(tasks: int, *, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each task is drawn in each bootstrap resample (resamples x tasks), in chunks;
    the same seed gives the same resamples, so every measure of a round shares them."""
    rng = np.random.default_rng(seed)
    step = max(1, min(resamples, BOOTSTRAP_CELLS // max(1, tasks)))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        drawn = rng.integers(0, tasks, size=(b, tasks)) + (np.arange(b) * tasks)[:, None]
        yield np.bincount(drawn.ravel(), minlength=b * tasks).reshape(b, tasks).astype(float)


class _OrdinalReliability:
    """One measure's reliability data, task by task: each unit's value counts (for the point
    estimate) and each task's coincidence matrix (for the bootstrap)."""

    def __init__(self, domain: Iterable[int]) -> None:
        self.domain = np.asarray(list(domain))
        self.column = {int(value): i for i, value in enumerate(self.domain)}
        self.unit_counts: list[np.ndarray] = []
        self.task_coincidences: list[np.ndarray] = []

    def add_task(self, values_by_unit: Sequence[Sequence[int]]) -> None:
        counts = np.zeros((len(values_by_unit), len(self.domain)), dtype=np.int64)
        for row, values in enumerate(values_by_unit):
            for value in values:
                if value in self.column:  # a value off the scale is treated as missing
                    counts[row, self.column[value]] += 1
        self.unit_counts.append(counts)
        self.task_coincidences.append(_coincidences(counts))

    def estimate(self, *, bootstrap: int, seed: int) -> Estimate:
        if not self.unit_counts or len(self.domain) < 2:
            return NOTHING
        counts = np.concatenate(self.unit_counts)
        units = int((counts.sum(axis=1) >= 2).sum())
        if not units:
            return NOTHING
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(
                krippendorff.alpha(
                    value_counts=counts, value_domain=self.domain, level_of_measurement="ordinal"
                )
            )
        if not math.isfinite(value):
            return Estimate(value=None, low=None, high=None, n=units)
        if bootstrap <= 0:
            return Estimate(value=value, low=None, high=None, n=units)
        size = len(self.domain)
        per_task = np.stack(self.task_coincidences).reshape(len(self.task_coincidences), -1)
        samples = np.concatenate(
            [
                _ordinal_alpha((weights @ per_task).reshape(-1, size, size))
                for weights in _resampled_task_weights(
                    len(per_task), resamples=bootstrap, seed=seed
                )
            ]
        )
        samples = samples[np.isfinite(samples)]
        if not samples.size:
            return Estimate(value=value, low=None, high=None, n=units)
        low, high = np.percentile(samples, [2.5, 97.5])
        return Estimate(value=value, low=float(low), high=float(high), n=units)


# --- Per round ----------------------------------------------------------------------------------


def _by_task(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """Rows ordered by task id (their first field), a task at a time."""
    for task_id, group in itertools.groupby(rows, key=lambda row: row[0]):
        yield task_id, list(group)


def _in_rounds(judgments: QuerySet[Judgment], rounds: list[int] | None) -> QuerySet[Judgment]:
    return judgments.filter(task__round__number__in=rounds) if rounds else judgments


@dataclass(frozen=True)
class RoundAgreement:
    round: int
    tasks: int  # non-gold tasks judged at least twice (the ones agreement rests on)
    judgments: int  # judgments in the round
    annotators: int
    ranking_alpha: Estimate  # ordinal alpha on rank positions, units = (task, completion)
    axis_alpha: dict[str, Estimate]  # ordinal alpha per rubric axis on the scores, same units
    pairwise: Estimate  # pairwise agreement on pair directions, Wilson interval


def round_agreement(*, round_number: int, bootstrap: int = 500, seed: int = 0) -> RoundAgreement:
    """Agreement among a round's annotators: alpha on ranks and on each axis, with bootstrap
    intervals over ``bootstrap`` seeded resamples of tasks (0: no interval), and pairwise
    agreement."""
    round_ = Round.objects.select_related("rubric").filter(number=round_number).first()
    if round_ is None:
        raise DomainError(f"No round {round_number}.", code="not_found", status=404)
    judgments = Judgment.objects.filter(task__round=round_)
    totals = judgments.aggregate(
        judgments=Count("id"), annotators=Count("annotator", distinct=True)
    )
    ranks = _OrdinalReliability(range(1, round_.k + 1))
    axes = {
        axis["key"]: _OrdinalReliability(range(int(axis["min"]), int(axis["max"]) + 1))
        for axis in round_.rubric.axes
    }
    agreeing = comparable = tasks = 0
    rows = (
        judgments.filter(task__gold_ranking__isnull=True)
        .order_by("task_id")
        .values_list("task_id", "ranking", "scores")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for _, group in _by_task(rows):
        if len(group) < 2:
            continue
        tasks += 1
        rankings = [ranking for _, ranking, _ in group]
        agree, compared = _agreement_counts([pair_directions(r) for r in rankings])
        agreeing, comparable = agreeing + agree, comparable + compared
        units = sorted({cid for ranking in rankings for g in ranking for cid in g})
        positions = [_positions(ranking) for ranking in rankings]
        ranks.add_task([[p[cid] + 1 for p in positions if cid in p] for cid in units])
        for key, reliability in axes.items():
            reliability.add_task(
                [
                    [s[str(cid)][key] for _, _, s in group if key in s.get(str(cid), {})]
                    for cid in units
                ]
            )
    return RoundAgreement(
        round=round_.number,
        tasks=tasks,
        judgments=totals["judgments"],
        annotators=totals["annotators"],
        ranking_alpha=ranks.estimate(bootstrap=bootstrap, seed=seed),
        axis_alpha={
            key: reliability.estimate(bootstrap=bootstrap, seed=seed)
            for key, reliability in axes.items()
        },
        pairwise=wilson_estimate(agreeing, comparable),
    )


def agreement_by_round(*, bootstrap: int = 200) -> list[RoundAgreement]:
    """``round_agreement`` of every round with judgments, by round number."""
    numbers = (
        Round.objects.filter(tasks__judgments__isnull=False)
        .distinct()
        .order_by("number")
        .values_list("number", flat=True)
    )
    return [round_agreement(round_number=n, bootstrap=bootstrap) for n in numbers]


# --- Per annotator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorQuality:
    annotator_id: int
    judgments: int
    gold_judgments: int
    gold_pairs: int
    gold_hits: float
    gold_accuracy: Estimate  # gold_hits / gold_pairs, Wilson interval
    agreement_pairs: int
    agreement_hits: float
    agreement: Estimate  # against the leave-one-out consensus, Wilson interval
    trust: float
    flagged: bool


@dataclass
class _Tally:
    judgments: int = 0
    gold_judgments: int = 0
    gold_pairs: int = 0
    gold_hits: float = 0.0
    agreement_pairs: int = 0
    agreement_hits: float = 0.0

    def quality(self, annotator_id: int) -> AnnotatorQuality:
        evidence = GOLD_WEIGHT * self.gold_pairs + self.agreement_pairs + PRIOR_PAIRS
        trust = (
            GOLD_WEIGHT * self.gold_hits + self.agreement_hits + PRIOR_PAIRS * PRIOR_SCORE
        ) / evidence
        return AnnotatorQuality(
            annotator_id=annotator_id,
            judgments=self.judgments,
            gold_judgments=self.gold_judgments,
            gold_pairs=self.gold_pairs,
            gold_hits=self.gold_hits,
            gold_accuracy=wilson_estimate(self.gold_hits, self.gold_pairs),
            agreement_pairs=self.agreement_pairs,
            agreement_hits=self.agreement_hits,
            agreement=wilson_estimate(self.agreement_hits, self.agreement_pairs),
            trust=trust,
            flagged=trust < settings.TRUST_REVIEW_BELOW
            and self.gold_pairs + self.agreement_pairs >= settings.TRUST_MIN_PAIRS,
        )


def annotator_quality(
    *, rounds: list[int] | None = None, annotator_id: int | None = None
) -> dict[int, AnnotatorQuality]:
    """Gold accuracy, leave-one-out agreement and trust of every annotator with judgments in
    ``rounds``, keyed by user id. With ``annotator_id``, only the tasks that annotator judged
    are read (an annotator's own stats, without a pass over everyone's judgments)."""
    judgments = _in_rounds(Judgment.objects.all(), rounds)
    if annotator_id is not None:
        judgments = judgments.filter(
            task__in=Judgment.objects.filter(annotator_id=annotator_id).values("task_id")
        )
    rows = (
        judgments.order_by("task_id")
        .values_list("task_id", "annotator_id", "ranking", "task__gold_ranking")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    tallies: dict[int, _Tally] = defaultdict(_Tally)
    for _, group in _by_task(rows):
        gold = group[0][3]
        for i, (_, judge_id, ranking, _) in enumerate(group):
            tally = tallies[judge_id]
            tally.judgments += 1
            if gold is not None:
                hits, pairs = gold_pair_score(ranking, gold)
                tally.gold_judgments += 1
                tally.gold_pairs += pairs
                tally.gold_hits += hits
            elif len(group) >= 2:
                others = [row[2] for j, row in enumerate(group) if j != i]
                hits, pairs = consensus_pair_score(ranking, others)
                tally.agreement_pairs += pairs
                tally.agreement_hits += hits
    return {
        user_id: tally.quality(user_id)
        for user_id, tally in tallies.items()
        if annotator_id is None or user_id == annotator_id
    }


def annotator_trust_scores(*, rounds: list[int] | None = None) -> dict[int, float]:
    """{user id: trust}, the weights for a trust-weighted consensus."""
    return {uid: quality.trust for uid, quality in annotator_quality(rounds=rounds).items()}


# --- Per task -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDisagreement:
    task_id: int
    round: int
    judgments: int
    agreement: float


def disagreements(*, rounds: list[int] | None = None, limit: int = 50) -> list[TaskDisagreement]:
    """Non-gold tasks judged at least twice, lowest ``task_agreement`` first (then by task id);
    tasks with nothing comparable (every pair tied by someone) have no agreement and are left
    out. Only ``limit`` tasks are held at a time."""
    rows = (
        _in_rounds(Judgment.objects.filter(task__gold_ranking__isnull=True), rounds)
        .order_by("task_id")
        .values_list("task_id", "task__round__number", "ranking")
        .iterator(chunk_size=CHUNK_SIZE)
    )

    def measured() -> Iterator[TaskDisagreement]:
        for task_id, group in _by_task(rows):
            if len(group) < 2:
                continue
            agreement = task_agreement([ranking for _, _, ranking in group])
            if agreement is not None:
                yield TaskDisagreement(
                    task_id=task_id, round=group[0][1], judgments=len(group), agreement=agreement
                )

    return heapq.nsmallest(limit, measured(), key=lambda task: (task.agreement, task.task_id))
