"""The gate's human stage: people compare the candidate with the serving policy, side by side.

A reward model as small as the tiny one learns tone, not arithmetic: its gate promotes a
candidate that is politer and less often right, and rejects one that is better by a margin it
cannot see. Llama 2 and Chatbot Arena decide with people. A gate with ``human_prompts`` does too,
and keeps the reward model's check as a cheap first filter: only a candidate that passes it is
shown to people.

1. ``human_round_open`` (in the gate's job, once the reward model's check passed): both policies
   answer ``human_prompts`` held-out prompts (``annotation.side_by_side.side_by_side_prompts``),
   one sampled answer each, at the gate's temperature; a side-by-side round of K = 2 opens with
   them (blind, its order balanced), and the gate waits, ``judging``.
2. Annotators judge it like any other round: ``/api/v1/tasks/next/`` hands out its tasks.
3. ``gate_human_decide`` once every task has its judgments (or an admin closed the round early:
   then on what it has). Of the judgments that prefer one answer, the share that prefer the
   candidate, with its 95% Wilson interval: the candidate passes when the interval's lower end
   is at least ``human_threshold``, 0.5 by default: people prefer it beyond chance. Ties (and
   identical answers, not shown) are left out of the decision, as a sign test leaves them out:
   they say nothing about which policy is better, and two policies a round apart give the same
   answer to many prompts (with the tiny model, often two in three), which would hold any win
   rate that counts them as half near 0.5. The win rate with ties as half is recorded too
   (``human_win_rate``), comparable with the reward model's. Then the candidate is deployed,
   or rejected, as the reward model's verdict would be; the round is closed.

What calls ``gate_human_decide``: each judgment of the round is announced
(``judgment_recorded``; ``training/apps.py`` queues ``training.tasks.gate_human_check``), and
so is an admin's early close of the round (``round_completed``, the same task); an automation
waiting on the gate checks at each pass, and the beat's ``automations_advance_all`` checks
every judging gate (a lost message). Whichever decides announces the
gate's end once, as ``job_finished`` (an automation waiting on it moves on; the
``gate.decided`` webhook goes out); the gate's own job does not announce a gate it hands to
people.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from annotation.models import Round
from annotation.rounds import round_close, round_progress
from annotation.side_by_side import (
    SAME_ANSWERS,
    SideBySideAnswer,
    side_by_side_differ,
    side_by_side_open,
    side_by_side_prompts,
    side_by_side_tally,
)
from feedback.models import PolicyVersion
from feedback.platform.errors import DomainError
from feedback.platform.signals import job_finished
from feedback.serving.backends import Backend, Sampling, Target
from feedback.serving.policies import deployment_request

from .models import GateEvaluation

# One answer per policy and prompt: a person judges each pair once, and more prompts say more
# than more samples of the same prompts.
HUMAN_SAMPLES = 1


def human_answers(
    gate: GateEvaluation, backend: Backend, targets: dict[str, Target], sampling: Sampling
) -> list[SideBySideAnswer]:
    """Both policies' answers to the held-out prompts people will compare them on."""
    prompts = side_by_side_prompts(count=gate.human_prompts, tags=gate.human_tags)
    if not prompts:
        raise DomainError(
            "No held-out prompts for people to compare the policies on: import prompts that no "
            "round has used" + (f" (tagged {', '.join(gate.human_tags)})" if gate.human_tags
                                else "") + ".",
            code="no_held_out_prompts",
        )  # fmt: skip
    messages = [prompt.messages for prompt in prompts]
    said = {side: backend.generate(target, messages, n=HUMAN_SAMPLES, sampling=sampling)
            for side, target in targets.items()}  # fmt: skip
    answers = [
        SideBySideAnswer(prompt=prompt, candidate=ours[0].text, baseline=theirs[0].text)
        for prompt, ours, theirs in zip(prompts, said["candidate"], said["baseline"], strict=True)
    ]
    if not side_by_side_differ(answers):  # here, where the gate records why it stopped
        raise DomainError(SAME_ANSWERS, code="nothing_to_compare")
    return answers


def human_round_open(
    gate: GateEvaluation, answers: list[SideBySideAnswer], sampling: dict[str, Any]
) -> None:
    """Open the side-by-side round and set the gate judging (in the caller's transaction, which
    holds the gate's lock: a second delivery of the job finds it judging and opens nothing)."""
    round_, identical = side_by_side_open(
        candidate=gate.candidate, baseline=gate.baseline, answers=answers,
        overlap=gate.human_overlap, sampling=sampling,
    )  # fmt: skip
    gate.human_round = round_
    gate.status = GateEvaluation.Status.JUDGING
    gate.metrics = {
        **gate.metrics,
        "human": {"round": round_.pk, "round_number": round_.number, "prompts": len(answers),
                  "identical": identical, "threshold": gate.human_threshold},
    }  # fmt: skip
    gate.save(update_fields=["human_round", "status", "metrics", "win_rate"])


def _ready(round_: Round) -> bool:
    """Every task has its judgments, or an admin closed the round: time to decide."""
    progress = round_progress(round_=round_)
    return round_.status == Round.Status.CLOSED or progress["judgments"] >= progress["target"]


def gate_human_decide(*, gate_id: int) -> GateEvaluation:
    """Decide a judging gate whose side-by-side round is done; otherwise leave it as it is.
    Idempotent: the gate's row is locked, and only a judging gate is decided."""
    with transaction.atomic():
        gate = (
            GateEvaluation.objects.select_for_update(of=("self",))
            .select_related("human_round", "candidate")
            .get(pk=gate_id)
        )
        if gate.status != GateEvaluation.Status.JUDGING or not _ready(gate.human_round):
            return gate
        human = dict(gate.metrics.get("human", {}))
        tally = side_by_side_tally(
            round_=gate.human_round, candidate=gate.candidate, identical=human.get("identical", 0)
        )
        gate.human_win_rate, gate.human_lower_bound = tally.win_rate.value, tally.decisive.low
        failed_on = list(gate.metrics.get("failed_on", []))
        if tally.decisive.n == 0:  # no judgment preferred either: no evidence it is better
            failed_on.append("human_no_preference")
        elif not tally.decisive.low >= gate.human_threshold:
            failed_on.append("human_win_rate")
        gate.metrics = {**gate.metrics, "human": {**human, **tally.as_dict()},
                        "failed_on": failed_on}  # fmt: skip
        gate.status = GateEvaluation.Status.FAILED if failed_on else GateEvaluation.Status.PASSED
        gate.finished_at = timezone.now()
        gate.save(update_fields=["human_win_rate", "human_lower_bound", "metrics", "status",
                                 "finished_at"])  # fmt: skip
        round_close(round_id=gate.human_round_id)
        # People may take days: an admin may have deployed (or retired) the candidate by hand
        # meanwhile. The verdict is recorded either way; it acts only on a candidate still one.
        still_candidate = gate.candidate.status == PolicyVersion.Status.CANDIDATE
        if still_candidate and failed_on:
            PolicyVersion.objects.filter(pk=gate.candidate_id).update(
                status=PolicyVersion.Status.REJECTED
            )
        elif still_candidate:
            deployment_request(policy_id=gate.candidate_id)
        # Once, from whichever path decided: an automation waiting on the gate moves on, and
        # the gate.decided webhook goes out.
        transaction.on_commit(
            lambda: job_finished.send(sender=GateEvaluation, kind="gate", object_id=gate_id),
            robust=True,
        )
    return gate


def gates_judging(*, round_id: int | None = None) -> list[int]:
    """The judging gates (of one side-by-side round, if given)."""
    gates = GateEvaluation.objects.filter(status=GateEvaluation.Status.JUDGING)
    if round_id is not None:
        gates = gates.filter(human_round_id=round_id)
    return list(gates.values_list("pk", flat=True))


def gates_judging_decide() -> list[int]:
    """The beat's safety net: decide every judging gate that is ready. Returns those decided."""
    return [
        pk
        for pk in gates_judging()
        if gate_human_decide(gate_id=pk).status != GateEvaluation.Status.JUDGING
    ]
