"""Automatic rounds: judgments → reward model → DPO → gate → deploy → the next round, unattended.

``automation_advance`` moves one automation as far as it can without waiting and returns: it
creates the next stage's job (a training run, a gate, a round) and stores it on the row under the
row's lock, so calling it twice, or from two workers, does the same work once. Each stage has one
handler (``STAGE_HANDLERS``): it checks whether what the stage waits for is done and, if so,
starts the next stage's job:

=========== =============================== ===============================================
stage       waits for                       then
=========== =============================== ===============================================
waiting     the round's required judgments  close the round, cut its pairs, train a reward
                                            model (on every judged round so far)
reward      the reward-model run            train the policy (DPO or online RL): on every
                                            judged round's pairs (``policy_rounds``)
policy      the policy run                  ask the gate: does the candidate beat the active?
gate        the gate's verdict (with        passed: wait for its deployment; rejected: go on
            ``human_gate_prompts``, people's
            side by side: training.human_gate)
deploy      the deployment                  go on to the next round
next_round  nothing                         open the next round (an automated one) or finish
=========== =============================== ===============================================

What calls ``automation_advance``. The apps below ``training`` cannot import it (imports point
down the layers), so they announce events with the signals of ``feedback.platform.signals`` and
``training/apps.py`` (``TrainingConfig.ready``) connects the receivers:

* ``judgment_recorded(round_id)``, sent by ``annotation.judgments.judgment_submit`` once a new
  judgment of a round with ``announce_judgments`` commits (``automation_create`` sets it, in
  its transaction; every round an automation opens is created with an automation); received
  by ``training.apps._judgment_recorded``, which queues ``training.tasks.automation_advance``
  for the round's waiting automation (a worker checks the count, not the request).
* ``job_finished(kind, object_id)``, sent by every Celery task whose job an automation may wait
  on, whatever the outcome: ``training.tasks.training_run_execute`` (``training_run``),
  ``training.tasks.gate_evaluate`` (``gate``), ``feedback.tasks.deployment_run``
  (``deployment``) and ``annotation.tasks.round_generate`` (``round``); received by
  ``training.apps._job_finished``, which advances the automations waiting on that job
  (``automations_waiting_on``) in the same worker.
* the beat entry ``advance-automations`` (feedback/settings.py), every 15 s:
  ``training.tasks.automations_advance_all``, the safety net for a lost message or a dead worker.

``simulate`` without a server runs the jobs through the services, not the tasks, so no signal is
sent; it calls ``automation_advance`` itself.

A failed stage stops the automation with the reason; the serving policy stays as it was, since
only a passed gate deploys. A rejected candidate is recorded and the next round opens with the
policy that kept serving. Stopping cancels the training run in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotation.models import Round
from annotation.round_selection import SELECTIONS
from annotation.rounds import round_close, round_open_for_policy, round_progress
from feedback.models import Deployment
from feedback.platform.errors import DomainError
from feedback.platform.outbox import outbox_enqueue
from feedback.serving.backends import Sampling

from .gate import gate_request
from .human_gate import gate_human_decide
from .models import Automation, GateEvaluation, TrainingRun
from .runs import recipe_validate, training_run_cancel, training_run_create
from .snapshots import snapshot_create_preference

# How the policy is updated from a round: DPO on its pairs, or online RL against the reward model.
POLICY_STEPS = ("dpo", "online_rl")
# What DPO trains on: every judged round so far, or this round alone.
POLICY_ROUNDS = ("all", "this")


def automation_validate(
    *, required_judgments: int | None = None, reward_recipe: dict[str, Any] | None = None,
    policy_recipe: dict[str, Any] | None = None, gate_threshold: float = 0.5,
    gate_max_kl_drift: float | None = None, gate_prompts: int = 32, next_prompts: int = 0,
    prompt_tags: list[str] | None = None, rounds_left: int = 0, policy_kind: str = "dpo",
    next_selection: str = "random", next_pool: int | None = None, human_gate_prompts: int = 0,
    human_gate_threshold: float = 0.5, human_gate_overlap: int = 1, policy_rounds: str = "all",
) -> None:  # fmt: skip
    """Raise a 400 naming every bad setting. Recipes are checked now, not when training starts."""
    errors: dict[str, list[str]] = {}
    if next_selection not in SELECTIONS:
        errors["next_selection"] = [f"One of: {', '.join(SELECTIONS)}."]
    if next_pool is not None and (next_selection == "random" or next_pool < 1):
        errors["next_pool"] = ["At least 1, and only with a next_selection other than random."]
    if policy_rounds not in POLICY_ROUNDS:
        errors["policy_rounds"] = [f"One of: {', '.join(POLICY_ROUNDS)}."]
    if policy_kind not in POLICY_STEPS:
        errors["policy_kind"] = [f"One of: {', '.join(POLICY_STEPS)}."]
        policy_kind = "dpo"
    for field, kind, overrides in (
        ("reward_recipe", "reward", reward_recipe),
        ("policy_recipe", policy_kind, policy_recipe),
    ):
        try:
            recipe_validate(kind, overrides or {})
        except DomainError as exc:
            for name, why in exc.fields.items():
                errors[name.replace("recipe", field, 1)] = why
    for name, value in (("gate_threshold", gate_threshold),
                        ("human_gate_threshold", human_gate_threshold)):  # fmt: skip
        if not 0.0 <= value <= 1.0:
            errors[name] = ["Between 0 and 1."]
    if human_gate_overlap < 1:
        errors["human_gate_overlap"] = ["At least 1."]
    if gate_max_kl_drift is not None and not gate_max_kl_drift >= 0:  # `not >=` refuses NaN
        errors["gate_max_kl_drift"] = ["A number of nats per answer, at least 0."]
    if required_judgments is not None and required_judgments < 1:
        errors["required_judgments"] = ["At least 1."]
    for name, value in (("gate_prompts", gate_prompts), ("next_prompts", next_prompts),
                        ("rounds_left", rounds_left),
                        ("human_gate_prompts", human_gate_prompts)):  # fmt: skip
        if value < 0:
            errors[name] = ["At least 0."]
    if errors:
        raise DomainError(
            "; ".join(f"{name}: {' '.join(why)}" for name, why in errors.items()), fields=errors
        )


def automation_create(*, round_: Round, created_by: Any = None, **settings: Any) -> Automation:
    """Set a round to advance by itself (settings as in ``automation_validate``)."""
    automation_validate(**settings)
    if Automation.objects.filter(round=round_).exists():
        raise DomainError(f"Round {round_.number} is already automated.", code="conflict",
                          status=409)  # fmt: skip
    settings = {key: value for key, value in settings.items() if value is not None}
    with transaction.atomic():
        # From now on each judgment of the round is announced (``judgment_recorded``).
        Round.objects.filter(pk=round_.pk).update(announce_judgments=True)
        automation = Automation.objects.create(
            round=round_, created_by=created_by, **settings,
            history=[{"stage": Automation.Stage.WAITING, "at": timezone.now().isoformat()}],
        )  # fmt: skip
        automation_enqueue(automation.pk)
    return automation


def automation_enqueue(automation_id: int) -> None:
    outbox_enqueue(task="training.tasks.automation_advance", args=[automation_id], queue="default")


def automation_stop(*, automation_id: int) -> Automation:
    """Stop where it is: the run in progress is cancelled; nothing further starts."""
    with transaction.atomic():
        automation = Automation.objects.select_for_update().filter(pk=automation_id).first()
        if automation is None:
            raise DomainError("No such automation.", code="not_found", status=404)
        if automation.stage not in Automation.FINISHED:
            automation.stop_requested = True
            automation.save(update_fields=["stop_requested", "updated_at"])
    return automation_advance(automation_id=automation_id)


def _move(automation: Automation, stage: str, **fields: Any) -> None:
    automation.stage = stage
    automation.history = [*automation.history, {"stage": stage, "at": timezone.now().isoformat()}]
    for name, value in fields.items():
        setattr(automation, name, value)


def _fail(automation: Automation, reason: str) -> None:
    _move(automation, Automation.Stage.FAILED, error=reason[:4000])


def _run_outcome(automation: Automation, run: TrainingRun) -> bool:
    """True when the run succeeded; fails the automation when the run ended otherwise."""
    run.refresh_from_db()
    if run.status == TrainingRun.Status.SUCCEEDED:
        return True
    if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        _fail(automation, f"{run.get_kind_display()} run {run.pk} {run.status}: {run.error}")
    return False


def _step(automation: Automation) -> bool:
    """Advance one stage if its input is ready. True when it moved (and may move again)."""
    if automation.stop_requested:
        for run in (automation.reward_run, automation.policy_run):
            if run is not None and run.status in TrainingRun.ACTIVE:
                training_run_cancel(run_id=run.pk)
        _move(automation, Automation.Stage.STOPPED)
        return False
    handler = STAGE_HANDLERS.get(automation.stage)
    return handler(automation) if handler is not None else False


def _round_judged(automation: Automation) -> bool:
    """waiting → reward: once the round has its judgments, close it and train a reward model."""
    if automation.round.status == Round.Status.GENERATING:
        return False
    progress = round_progress(round_=automation.round)
    needed = automation.required_judgments or progress["target"]
    if needed == 0:
        _fail(automation, "The round has no tasks to judge.")
        return False
    if progress["judgments"] < needed:
        return False
    round_close(round_id=automation.round_id)
    # The reward model learns from every judged round so far, since more pairs make a better
    # judge (as Llama 2 accumulates its preference data); so does DPO by default. Measured on
    # the tiny loop over five seeds, every candidate promoted (docs/benchmarks.md, "The loop"):
    # trained on its round alone (its own samples: on-policy, but 32 prompts' pairs) the policy
    # gained little after round 1 and ended at 0.65-0.70 against round 0; on every round's
    # pairs at 0.70-0.73, and at 0.74-0.78 with 64 prompts a round, with fewer rude and more
    # right answers (with people deciding the gate, 80 a round: 0.73-0.81 over ten seeds).
    # ``policy_rounds="this"`` keeps the round alone.
    rounds = [automation.round.number] if automation.policy_rounds == "this" else None
    snapshot = snapshot_create_preference(rounds=rounds)
    run = training_run_create(kind="reward", rounds=None, recipe=automation.reward_recipe)
    _move(automation, Automation.Stage.REWARD, snapshot=snapshot, reward_run=run)
    return True


def _reward_trained(automation: Automation) -> bool:
    """reward → policy: once the reward model is trained, train the policy on the round."""
    if not _run_outcome(automation, automation.reward_run):
        return False
    recipe = dict(automation.policy_recipe)
    if (
        automation.policy_kind == TrainingRun.Kind.ONLINE_RL
        and recipe.get("combine", "single") == "single"
    ):
        recipe.setdefault("reward_run", automation.reward_run_id)  # the one just trained
    run = training_run_create(
        kind=automation.policy_kind, snapshot_id=automation.snapshot_id, recipe=recipe
    )
    _move(automation, Automation.Stage.POLICY, policy_run=run)
    return True


def _policy_trained(automation: Automation) -> bool:
    """policy → gate: once the candidate is trained, ask the gate whether it beats the active."""
    if not _run_outcome(automation, automation.policy_run):
        return False
    gate = gate_request(
        candidate_id=automation.policy_run.produced_policy_id,
        reward_run_id=automation.reward_run_id,
        prompts=automation.gate_prompts,
        threshold=automation.gate_threshold,
        max_kl_drift=automation.gate_max_kl_drift,
        human_prompts=automation.human_gate_prompts,
        human_threshold=automation.human_gate_threshold,
        human_overlap=automation.human_gate_overlap,
        human_tags=automation.prompt_tags,
    )
    _move(automation, Automation.Stage.GATE, gate=gate)
    return True


def _gate_decided(automation: Automation) -> bool:
    """gate → deploy (passed: its deployment) or next_round (rejected: the policy stays)."""
    gate = GateEvaluation.objects.get(pk=automation.gate_id)
    if gate.status == GateEvaluation.Status.JUDGING:  # people decide: are they done?
        gate = gate_human_decide(gate_id=gate.pk)
    if gate.status in (GateEvaluation.Status.PENDING, GateEvaluation.Status.JUDGING):
        return False
    if gate.status == GateEvaluation.Status.ERROR:
        _fail(automation, f"Gate {gate.pk} could not run: {gate.error}")
        return False
    if gate.status == GateEvaluation.Status.FAILED:
        _move(automation, Automation.Stage.NEXT_ROUND)
        return True
    deployment = (
        Deployment.objects.filter(policy_version_id=gate.candidate_id).order_by("-id").first()
    )
    if deployment is None:
        return False
    _move(automation, Automation.Stage.DEPLOY, deployment=deployment)
    return True


def _deployment_done(automation: Automation) -> bool:
    """deploy → next_round: once the candidate serves."""
    deployment = Deployment.objects.get(pk=automation.deployment_id)
    if deployment.status == Deployment.Status.PENDING:
        return False
    if deployment.status == Deployment.Status.FAILED:
        _fail(automation, f"Deployment {deployment.pk} failed: {deployment.error}")
        return False
    _move(automation, Automation.Stage.NEXT_ROUND)
    return True


def _next_selection(automation: Automation) -> dict[str, Any]:
    """How the next round chooses its prompts: with uncertainty, by the reward model this
    automation has just trained (active learning: where it is least sure, people judge)."""
    if automation.next_selection == "random":
        return {}
    run = automation.reward_run_id if automation.next_selection == "uncertainty" else None
    return {
        "selection": automation.next_selection, "selection_run": run,
        "pool": automation.next_pool,
    }  # fmt: skip


def _next_round_open(automation: Automation) -> bool:
    """next_round → done: open the next round with the serving policy and automate it with
    the same settings, one round fewer to go (or finish when none is left)."""
    if automation.rounds_left == 0:
        _move(automation, Automation.Stage.DONE)
        return False
    this = automation.round
    count = automation.next_prompts or len(this.prompt_ids) or this.tasks.count()
    try:
        opened = round_open_for_policy(
            k=this.k, overlap=this.overlap, tags=automation.prompt_tags, limit=count,
            sampling=Sampling(**{k: v for k, v in this.sampling.items() if k != "seed"})
            if this.sampling else None,
            backend=this.backend or None, **_next_selection(automation),
        )  # fmt: skip
    except DomainError as exc:
        _fail(automation, f"The next round could not open: {exc.detail}")
        return False
    automation_create(
        round_=opened,
        required_judgments=automation.required_judgments,
        reward_recipe=automation.reward_recipe, policy_recipe=automation.policy_recipe,
        policy_kind=automation.policy_kind, policy_rounds=automation.policy_rounds,
        gate_threshold=automation.gate_threshold,
        gate_max_kl_drift=automation.gate_max_kl_drift, gate_prompts=automation.gate_prompts,
        next_prompts=automation.next_prompts, prompt_tags=automation.prompt_tags,
        rounds_left=automation.rounds_left - 1, created_by=automation.created_by,
        next_selection=automation.next_selection, next_pool=automation.next_pool,
        human_gate_prompts=automation.human_gate_prompts,
        human_gate_threshold=automation.human_gate_threshold,
        human_gate_overlap=automation.human_gate_overlap,
    )  # fmt: skip
    _move(automation, Automation.Stage.DONE, next_round=opened)
    return False


# Each unfinished stage's handler: it returns True when it moved the automation on.
STAGE_HANDLERS: dict[str, Callable[[Automation], bool]] = {
    Automation.Stage.WAITING: _round_judged,
    Automation.Stage.REWARD: _reward_trained,
    Automation.Stage.POLICY: _policy_trained,
    Automation.Stage.GATE: _gate_decided,
    Automation.Stage.DEPLOY: _deployment_done,
    Automation.Stage.NEXT_ROUND: _next_round_open,
}


def automation_advance(*, automation_id: int) -> Automation:
    """Move the automation as far as it goes now; safe to call any time, from anywhere."""
    with transaction.atomic():
        # Lock the row alone and load what it points to afterwards: joined rows would come from
        # the snapshot taken before the lock was granted, and miss a run another worker just
        # created (PostgreSQL re-reads only the locked row).
        automation = Automation.objects.select_for_update().filter(pk=automation_id).first()
        if automation is None or automation.stage in Automation.FINISHED:
            return automation
        try:
            while _step(automation):
                pass
        except DomainError as exc:
            _fail(automation, f"{automation.get_stage_display()}: {exc.detail}")
        automation.save()
    return automation


def automations_advance_all() -> list[int]:
    """The beat's safety net: advance every unfinished automation. Returns the ids it moved."""
    moved = []
    for pk, stage in Automation.objects.exclude(stage__in=Automation.FINISHED).values_list(
        "pk", "stage"
    ):
        if automation_advance(automation_id=pk).stage != stage:
            moved.append(pk)
    return moved


def automations_for_round(round_id: int) -> list[int]:
    return list(
        Automation.objects.filter(round_id=round_id, stage=Automation.Stage.WAITING).values_list(
            "pk", flat=True
        )
    )


def automations_waiting_on(kind: str, object_id: int) -> list[int]:
    """The unfinished automations whose current stage waits on this job."""
    waits_on = {
        "training_run": Q(reward_run_id=object_id) | Q(policy_run_id=object_id),
        "gate": Q(gate_id=object_id),
        "deployment": Q(deployment_id=object_id),
        "round": Q(round_id=object_id),
    }.get(kind)
    if waits_on is None:
        return []
    live = Automation.objects.exclude(stage__in=Automation.FINISHED).filter(waits_on)
    return list(live.values_list("pk", flat=True))
