"""Reward models for active learning: the runs that choose a round's prompts, and their scores.

``annotation.round_selection`` chooses the prompts of a round opened with ``selection``
``uncertainty`` or ``disagreement`` and asks this module (the ``ROUND_SELECTION_SCORING``
setting names it, so the annotation layer never imports training) which runs to use and what
they score each candidate.

* uncertainty: one succeeded reward-model run, the one named (``selection_run``) or else the
  newest trained on rankings;
* disagreement: the newest succeeded per-axis reward model of each axis; it takes at least two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from feedback.platform.errors import DomainError
from feedback.serving.backends import resolve_model_path

from .gate import axis_reward_runs
from .models import TrainingRun
from .runs import overall_reward_runs
from .trainers.common import reward_scorer


def _refused(message: str) -> DomainError:
    return DomainError(message, fields={"selection_run": [message]})


def selection_runs(*, selection: str, run_id: int | None) -> dict[str, int]:
    """The runs that will score, by name: ``{"reward": id}`` for uncertainty, ``{axis: id}`` for
    disagreement. A 400 naming ``selection_run`` when there is no suitable one."""
    if selection == "disagreement":
        if run_id is not None:
            raise _refused(
                "Disagreement uses the newest per-axis reward model of each axis; selection_run "
                "is for uncertainty."
            )
        axes = axis_reward_runs()
        if len(axes) < 2:
            raise _refused(
                "Disagreement needs succeeded per-axis reward models of at least two axes "
                f"(there are {len(axes)}): train them ('recipe': {{'axis': 'helpful'}}), or use "
                "uncertainty with a selection_run."
            )
        return {axis: run.pk for axis, run in axes.items()}
    if run_id is None:
        run = overall_reward_runs().order_by("-id").first()
        if run is None:
            raise _refused("Uncertainty needs a succeeded reward-model run; none exists yet.")
        return {"reward": run.pk}
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        raise _refused(f"Training run {run_id} does not exist.")
    if run.kind != TrainingRun.Kind.REWARD:
        raise _refused(f"Training run {run.pk} is a {run.kind} run, not a reward model.")
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise _refused(f"Reward run {run.pk} is {run.status}, not succeeded.")
    return {"reward": run.pk}


def candidates_score(
    *, runs: dict[str, int], items: list[tuple[list[dict[str, Any]], list[str]]]
) -> dict[str, list[list[float]]]:
    """Each run's score of every candidate: ``{name: [[score per text] per item]}``."""
    found = TrainingRun.objects.select_related("base_policy").in_bulk(runs.values())
    scored: dict[str, list[list[float]]] = {}
    for name, run_id in runs.items():
        run = found[run_id]
        score = reward_scorer(
            Path(settings.ARTIFACTS_DIR) / run.artifact_path / "model",
            resolve_model_path(run.base_policy.base_model),
        )
        scored[name] = [
            # Role and content only: what the reward model's chat template trained on.
            [score([{"role": m["role"], "content": m["content"]} for m in messages], text)
             for text in texts]
            for messages, texts in items
        ]  # fmt: skip
    return scored
