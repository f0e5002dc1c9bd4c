"""Active learning: a policy round that keeps, from a pool of prompts, those the current reward
model is least sure about.

A round opened with ``selection`` other than ``random`` takes a pool of prompts
(``round.prompt_ids`` at first, ``pool_size`` of them) and a number to keep
(``selection_detail["keep"]``). Its generation job (``annotation.round_generation``) first makes
the K candidates of every pool prompt, as it would for a task, and asks ``prompts_select``:

* ``uncertainty``: one reward model scores every candidate; a prompt's measure is the gap
  between its two best-scored candidates, and the prompts with the smallest gaps are kept (the
  model can hardly tell its two best answers apart, so a judgment there teaches it most);
* ``disagreement``: the newest per-axis reward model of each axis scores every candidate; a
  prompt's measure is how differently those models order its candidates (the share of candidate
  pairs two axes order oppositely, ties half, averaged over the pairs of axes), and the prompts
  with the most disagreement are kept.

Ties go to the older prompt. The round's ``prompt_ids`` become the kept prompts, and every pool
prompt's measure is stored in ``selection_detail["scores"]``, so a researcher can see why; the
job then publishes the kept prompts from the candidates already stored, generating nothing
again. Storing the scores is what marks the choice made: a job that runs again after a worker
died makes it only if it was not made.

Reward models belong to the training layer, above this one, so they are reached through the
module named by the ``ROUND_SELECTION_SCORING`` setting (the wiring names it;
``training.active_learning``), which has two functions:
``selection_runs(selection=, run_id=) -> {name: run id}`` (a ``DomainError`` naming
``selection_run`` when there is no suitable run) and
``candidates_score(runs=, items=[(messages, [text, ...]), ...]) -> {name: [[score, ...], ...]}``.
"""

from __future__ import annotations

import itertools
from importlib import import_module
from typing import Any

from django.conf import settings

from feedback.models import Completion, Prompt

from .models import Round

SELECTIONS = ("random", "uncertainty", "disagreement")


def _scoring() -> Any:
    return import_module(settings.ROUND_SELECTION_SCORING)


def selection_runs(*, selection: str, run_id: int | None) -> dict[str, int]:
    """The reward runs that will score the candidates, by name; checked now, when the round
    is opened, so a bad run is a 400 and not a failed job."""
    return _scoring().selection_runs(selection=selection, run_id=run_id)


def top_gap(scores: list[float]) -> float:
    """The reward gap between the two best-scored candidates (0: the model cannot choose)."""
    best, second = sorted(scores, reverse=True)[:2]
    return best - second


def _discordance(a: list[float], b: list[float]) -> float:
    """The share of candidate pairs that two score lists order oppositely; a tie on one side
    only counts half."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    total = 0.0
    for i, j in pairs:
        x, y = a[i] - a[j], b[i] - b[j]
        total += 1.0 if x * y < 0 else 0.5 if (x == 0) != (y == 0) else 0.0
    return total / len(pairs)


def ordering_disagreement(per_model: list[list[float]]) -> float:
    """How differently several reward models order the same candidates: the mean, over pairs
    of models, of the share of candidate pairs they order oppositely."""
    pairs = list(itertools.combinations(per_model, 2))
    return sum(_discordance(a, b) for a, b in pairs) / len(pairs)


def prompts_select(round_: Round, candidates: dict[int, list[Completion]]) -> list[int]:
    """Score each pool prompt's candidates, keep the ``keep`` most uncertain prompts, and record
    the choice on the round (see the module doc). Returns the kept prompt ids."""
    detail = dict(round_.selection_detail)
    messages = dict(Prompt.objects.filter(pk__in=list(candidates)).values_list("pk", "messages"))
    order = sorted(candidates)
    items = [(messages[pid], [c.text for c in candidates[pid]]) for pid in order]
    scored = _scoring().candidates_score(runs=detail["runs"], items=items) if items else {}
    measures: dict[int, float] = {}
    for index, pid in enumerate(order):
        per_model = [scored[name][index] for name in sorted(scored)]
        if round_.selection == "uncertainty":
            measures[pid] = top_gap(per_model[0])
        else:
            measures[pid] = ordering_disagreement(per_model)
    sign = 1 if round_.selection == "uncertainty" else -1
    kept = sorted(measures, key=lambda pid: (sign * measures[pid], pid))[: detail["keep"]]
    detail.update(
        scores={str(pid): v for pid, v in measures.items()}, kept=kept,
        left_out=len(round_.prompt_ids) - len(candidates),
    )  # fmt: skip
    Round.objects.filter(pk=round_.pk).update(
        prompt_ids=kept, selection_detail=detail, progress_done=0
    )
    round_.prompt_ids, round_.selection_detail = kept, detail
    return kept
