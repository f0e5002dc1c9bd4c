"""Side-by-side rounds: a candidate policy's answer next to the serving policy's, judged blind.

A promotion gate that people decide (``training.human_gate``) opens one, as Llama 2 and Chatbot
Arena compare models: for each held-out prompt one sampled answer of each policy, as a task of
K = 2 that annotators lease and judge like any other. They are not told which answer is whose
(the lease shows ids and texts only), and the order is balanced over the round: the tasks
alternate which policy's answer comes first, and a side-by-side round is shown as stored rather
than shuffled per annotator (``annotation.distribution``), so half the tasks show the candidate
first. The tally (``side_by_side_tally``) also gives the candidate's win rate by the position it
was shown in, so a position bias is seen rather than guessed.

Its prompts are held out (``side_by_side_prompts``): prompts no collecting round has used, so no
model trained on judgments of them; a round opened later never takes them either, since a round
takes unused prompts. Answers whose texts are the same say nothing about which policy is better:
they are not shown, and count as ties. Its judgments do not train: training snapshots of
"every round" leave side-by-side rounds out (``training.snapshots``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef

from feedback.models import Completion, PolicyVersion, Prompt
from feedback.platform.errors import DomainError

from .distribution import distribution_statistics_refresh
from .models import ComparisonTask, Judgment, Round, TaskCompletion
from .quality import Estimate, wilson_estimate
from .round_generation import storable
from .rounds import GATE_PRIORITY, Plan, _next_number, _tasks_create
from .rubrics import rubric_current

SIDE_BY_SIDE = Round.Source.SIDE_BY_SIDE


@dataclass(frozen=True)
class SideBySideAnswer:
    """One held-out prompt and the two policies' sampled answers to it."""

    prompt: Prompt
    candidate: str
    baseline: str


@dataclass(frozen=True)
class SideBySideTally:
    """What people said about a side-by-side round, from the candidate's side.

    ``judgments`` are the round's current judgments; ``identical`` the prompts not shown because
    both answers were the same (each a tie). ``win_rate`` counts a tie half, over both, as the
    reward model's gate and the oracle count; ``decisive`` leaves ties out (the sign test's view:
    a tie says nothing about which policy is better, and two close policies tie often)."""

    judgments: int
    identical: int
    wins: int
    ties: float  # judged ties plus identical answers
    losses: int
    none_acceptable: int
    win_rate: Estimate  # (wins + ties / 2) / (judgments + identical), Wilson 95% interval
    decisive: Estimate  # wins / (wins + losses), Wilson 95% interval
    shown_first: Estimate  # the candidate's win rate where its answer was shown first
    shown_second: Estimate  # and where it was shown second

    def as_dict(self) -> dict[str, Any]:
        def estimate(e: Estimate) -> dict[str, Any]:
            return {"value": e.value, "low": e.low, "high": e.high, "n": e.n}

        return {
            "judgments": self.judgments, "identical": self.identical, "wins": self.wins,
            "ties": self.ties, "losses": self.losses, "none_acceptable": self.none_acceptable,
            "win_rate": estimate(self.win_rate), "decisive": estimate(self.decisive),
            "shown_first": estimate(self.shown_first),
            "shown_second": estimate(self.shown_second),
        }  # fmt: skip


def side_by_side_prompts(*, count: int, tags: list[str] | None = None) -> list[Prompt]:
    """Up to ``count`` held-out prompts (with every one of ``tags``): prompts no collecting round
    has used. Those earlier side-by-side rounds showed come first, so that successive gates
    compare on a steady set, then the newest."""
    collecting = ComparisonTask.objects.filter(prompt=OuterRef("pk")).exclude(
        round__source=SIDE_BY_SIDE
    )
    gated = ComparisonTask.objects.filter(prompt=OuterRef("pk"), round__source=SIDE_BY_SIDE)
    candidates = (
        Prompt.objects.exclude(Exists(collecting))
        .annotate(gated=Exists(gated))
        .order_by("-gated", "-id")
    )
    wanted = set(tags or [])
    chosen: list[Prompt] = []
    for prompt in candidates.iterator(chunk_size=500):
        if wanted <= set(prompt.tags):
            chosen.append(prompt)
            if len(chosen) == count:
                break
    return chosen


def _completions_store(
    policy: PolicyVersion, texts: dict[int, str], sampling: dict[str, Any]
) -> dict[int, int]:
    """Store one answer of ``policy`` per prompt id, after the samples it already has there;
    returns {prompt id: completion id}."""
    start = dict(
        Completion.objects.filter(policy_version=policy, prompt_id__in=texts)
        .values("prompt_id")
        .annotate(last=Max("sample_index"))
        .values_list("prompt_id", "last")
    )
    index = {prompt_id: start.get(prompt_id, -1) + 1 for prompt_id in texts}
    rows = Completion.objects.bulk_create(
        Completion(prompt_id=prompt_id, policy_version=policy, text=storable(text),
                   sample_index=index[prompt_id], sampling_params=sampling)
        for prompt_id, text in texts.items()
    )  # fmt: skip
    if any(row.pk is None for row in rows):  # backends without RETURNING
        stored = Completion.objects.filter(policy_version=policy, prompt_id__in=texts)
        return {
            prompt_id: pk
            for prompt_id, pk, sample in stored.values_list("prompt_id", "pk", "sample_index")
            if sample == index[prompt_id]
        }
    return {row.prompt_id: row.pk for row in rows}


SAME_ANSWERS = (
    "The candidate and the serving policy gave the same answers to every prompt: there is "
    "nothing for people to compare."
)


def side_by_side_differ(answers: list[SideBySideAnswer]) -> list[SideBySideAnswer]:
    """The answers worth showing: those whose two texts differ."""
    return [a for a in answers if a.candidate.strip() != a.baseline.strip()]


def side_by_side_open(
    *, candidate: PolicyVersion, baseline: PolicyVersion, answers: list[SideBySideAnswer],
    overlap: int = 1, sampling: dict[str, Any] | None = None,
) -> tuple[Round, int]:  # fmt: skip
    """Open a side-by-side round of ``answers``; returns it and how many prompts were left out
    because both answers were the same. Its judgments are announced (``judgment_recorded``), so
    whatever waits on them hears of each."""
    shown = side_by_side_differ(answers)
    if not shown:
        raise DomainError(SAME_ANSWERS, code="nothing_to_compare")
    sampling = sampling or {}
    for attempt in range(3):  # another round may open at the same moment and take the number
        try:
            with transaction.atomic():
                ours = _completions_store(candidate, {a.prompt.pk: a.candidate for a in shown},
                                          sampling)  # fmt: skip
                theirs = _completions_store(baseline, {a.prompt.pk: a.baseline for a in shown},
                                            sampling)  # fmt: skip
                round_ = Round.objects.create(
                    number=_next_number(), source=SIDE_BY_SIDE, rubric=rubric_current(), k=2,
                    overlap=overlap, seed=0, status=Round.Status.OPEN, sampling=sampling,
                    prompt_ids=[a.prompt.pk for a in shown], announce_judgments=True,
                    priority=GATE_PRIORITY,
                )  # fmt: skip
                # Even tasks show the candidate first, odd ones the serving policy.
                plans: list[Plan] = [
                    (a.prompt.pk, [ours[a.prompt.pk], theirs[a.prompt.pk]][:: 1 if i % 2 == 0
                                                                             else -1])
                    for i, a in enumerate(shown)
                ]  # fmt: skip
                _tasks_create(round_, plans)
                distribution_statistics_refresh()
            return round_, len(answers) - len(shown)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def side_by_side_tally(
    *, round_: Round, candidate: PolicyVersion, identical: int = 0
) -> SideBySideTally:
    """Count the round's current judgments from the candidate's side (see ``SideBySideTally``),
    with the ``identical`` prompts its opening left out as ties."""
    ours = dict(
        TaskCompletion.objects.filter(
            task__round=round_, completion__policy_version=candidate
        ).values_list("task_id", "completion_id")
    )
    wins = losses = judged = none_acceptable = 0
    ties = 0.0
    by_position: dict[bool, list[float]] = {True: [], False: []}
    judgments = Judgment.objects.filter(task__round=round_).values_list(
        "task_id", "ranking", "display_order", "none_acceptable"
    )
    for task_id, ranking, order, none in judgments.iterator(chunk_size=1000):
        place = {cid: i for i, group in enumerate(ranking) for cid in group}
        mine = ours[task_id]
        other = next(cid for cid in place if cid != mine)
        score = 1.0 if place[mine] < place[other] else 0.5 if place[mine] == place[other] else 0.0
        wins += score == 1.0
        losses += score == 0.0
        ties += score == 0.5
        none_acceptable += bool(none)
        judged += 1
        by_position[bool(order) and order[0] == mine].append(score)
    n = judged + identical
    return SideBySideTally(
        judgments=judged, identical=identical, wins=wins, ties=ties + identical, losses=losses,
        none_acceptable=none_acceptable, win_rate=wilson_estimate(wins + (ties + identical) / 2, n),
        decisive=wilson_estimate(wins, wins + losses),
        shown_first=wilson_estimate(sum(by_position[True]), len(by_position[True])),
        shown_second=wilson_estimate(sum(by_position[False]), len(by_position[False])),
    )  # fmt: skip
