"""What a training run's page and the compare page draw: its loss and each held-out metric by
step, the training curve as a line and the held-out evaluations as dots over it, with what each
number is and its unit (the trainers log TRL's names, which say neither)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from training.models import TrainingRun

from .charts import Series, StepChart, step_chart

# The loss each kind minimises, per what.
LOSS_UNITS = {
    TrainingRun.Kind.REWARD: "nats per pair",
    TrainingRun.Kind.DPO: "nats per pair",
    TrainingRun.Kind.KTO: "nats per answer",
    TrainingRun.Kind.SFT: "nats per token",
    TrainingRun.Kind.PRETRAIN: "nats per token",
    TrainingRun.Kind.ONLINE_RL: "policy loss",
}
# TRL's metric names: (what it is, its unit). Held-out ones are these with "eval_" in front.
METRICS = {
    "accuracy": ("Pairwise accuracy: chosen scored above rejected", "share of pairs"),
    "margin": ("Reward margin: chosen minus rejected score", "reward"),
    "mean_reward": ("Mean reward the model gives", "reward"),
    "min_reward": ("Lowest reward in a batch", "reward"),
    "max_reward": ("Highest reward in a batch", "reward"),
    "rewards/accuracies": ("Reward accuracy: chosen rewarded above rejected", "share of pairs"),
    "rewards/margins": ("Reward margin: chosen minus rejected implicit reward", "β-scaled nats"),
    "rewards/chosen": (
        "Implicit reward of the chosen answers: β times the log-ratio to the reference",
        "β-scaled nats",
    ),
    "rewards/rejected": (
        "Implicit reward of the rejected answers: β times the log-ratio to the reference",
        "β-scaled nats",
    ),
    "kl": ("KL divergence from the reference policy", "nats"),
    "mean_token_accuracy": ("Token accuracy: next token predicted right", "share of tokens"),
    "entropy": ("Entropy of the next-token distribution", "nats per token"),
    "logps/chosen": ("Log-probability of the chosen answers", "nats"),
    "logps/rejected": ("Log-probability of the rejected answers", "nats"),
    "logits/chosen": ("Mean logit on the chosen answers", "logit"),
    "logits/rejected": ("Mean logit on the rejected answers", "logit"),
    "reward": ("Reward of the sampled answers", "reward"),
    "perplexity": ("Perplexity: e to the loss", "tokens"),
}
# Charted first, in this order; other held-out metrics follow by name.
CHART_ORDER = ("accuracy", "margin", "rewards/accuracies", "rewards/margins", "rewards/chosen",
               "rewards/rejected", "kl", "mean_token_accuracy", "reward")  # fmt: skip
# Counters and throughput the Trainer logs beside the metrics; not charted.
NOT_METRICS = {"epoch", "step", "learning_rate", "grad_norm", "num_tokens", "runtime",
               "samples_per_second", "steps_per_second", "total_flos", "train_runtime",
               "train_samples_per_second", "train_steps_per_second", "train_loss"}  # fmt: skip
# Final metrics kept under an older, shorter name too; the page lists the full name once.
ALIASES = {"eval_reward_accuracy": "eval_rewards/accuracies",
           "eval_reward_margin": "eval_rewards/margins",
           "eval_token_accuracy": "eval_mean_token_accuracy"}  # fmt: skip
# Charted for runs that hold nothing out (online RL): its reward and KL as it trains.
TRAIN_ONLY = ("reward", "kl")


@dataclass(frozen=True)
class MetricChart:
    key: str
    title: str
    chart: StepChart
    legend: list[tuple[int, str, bool]]  # (colour index, label, held-out: dashed with dots)


def _points(history: Iterable[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [
        (h["step"], float(h[key]))
        for h in history
        if isinstance(h.get(key), int | float) and isinstance(h.get("step"), int | float)
    ]


def charted_metrics(histories: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """The metrics to chart besides the loss: each one held out in any of the histories, the
    known ones first; without any held-out one, what a run that holds nothing out logs."""
    held_out = {
        key[len("eval_") :]
        for history in histories
        for h in history
        for key in h
        if key.startswith("eval_") and key[len("eval_") :] not in NOT_METRICS | {"loss"}
    }
    if not held_out:
        logged = {key for history in histories for h in history for key in h}
        return [key for key in TRAIN_ONLY if key in logged]
    known = [key for key in CHART_ORDER if key in held_out]
    return known + sorted(held_out - set(known))


def metric_label(key: str) -> tuple[str, str]:
    """(what it is, unit) of a logged metric; held-out ones say so."""
    name = key.removeprefix("eval_")
    what, unit = METRICS.get(name, (name.replace("_", " ").capitalize(), ""))
    return (f"Held out: {what[0].lower()}{what[1:]}" if key.startswith("eval_") else what), unit


def _chart(
    key: str, title: str, unit: str, runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]
) -> MetricChart | None:
    """One metric's chart: per run, the training line and the held-out dots (dashed line)."""
    series, legend = [], []
    several = len(runs) > 1
    for index, (name, history) in enumerate(runs):
        train, held_out = _points(history, key), _points(history, f"eval_{key}")
        prefix = f"{name}, " if several else ""
        if train:
            series.append(Series(key=f"{index}-train", label=f"{prefix}training", points=train,
                                 index=index))  # fmt: skip
            legend.append((index, f"{prefix}training", False))
        if held_out:
            series.append(Series(key=f"{index}-eval", label=f"{prefix}held out", points=held_out,
                                 index=index, dots=True, dashed=bool(train)))  # fmt: skip
            legend.append((index, f"{prefix}held out", True))
    if not series:
        return None
    label = f"{title} ({unit})" if unit else title
    chart = step_chart(series=series, y_label=unit or title)
    return MetricChart(key=key, title=label, chart=chart, legend=legend)


def run_charts(
    kind: str, runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]
) -> list[MetricChart]:
    """The loss chart, then one per held-out metric, of one run or of several of one kind
    (``runs``: (name, metrics history) each)."""
    charts = [_chart("loss", "Loss", LOSS_UNITS.get(kind, ""), runs)]
    for key in charted_metrics([history for _, history in runs]):
        what, unit = METRICS.get(key, (key.replace("_", " ").capitalize(), ""))
        charts.append(_chart(key, what, unit, runs))
    return [chart for chart in charts if chart is not None]


def final_numbers(kind: str, metrics: dict[str, Any]) -> list[tuple[str, float, str, str]]:
    """The run's final metrics as (name, value, what it is, unit) rows, training loss first,
    then the held-out ones; older short names left out where the full one is there."""
    rows, loss_unit = [], LOSS_UNITS.get(kind, "")
    for key, value in metrics.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if key in ALIASES and ALIASES[key] in metrics:
            continue
        if key == "train_loss":
            rows.append((key, value, "Training loss, mean over the run's steps", loss_unit))
        elif key == "resumed_from_step":
            rows.append((key, value, "Resumed from this checkpoint after its worker stopped", ""))
        elif key == "eval_loss":
            rows.append((key, value, "Held out: loss at the last evaluation", loss_unit))
        else:
            what, unit = metric_label(key)
            rows.append((key, value, what, unit))
    order = {"train_loss": 0, "eval_loss": 1}
    return sorted(rows, key=lambda row: order.get(row[0], 2))


# What one row of each kind's snapshot is.
ROW_UNITS = {
    TrainingRun.Kind.REWARD: "pairs",
    TrainingRun.Kind.DPO: "pairs",
    TrainingRun.Kind.ONLINE_RL: "pairs",
    TrainingRun.Kind.KTO: "answers",
    TrainingRun.Kind.SFT: "examples",
    TrainingRun.Kind.PRETRAIN: "documents",
}


def split_summary(run: TrainingRun, *, min_prompts: int) -> str:
    """What the run held out, in a sentence (from ``TrainingRun.eval_split``, written when it
    starts; before that, the snapshot's own counts)."""
    split, rows = run.eval_split, ROW_UNITS.get(run.kind, "rows")
    unit = split.get("unit", "prompts")
    counts = split.get(unit, {})
    held = f"{counts.get('eval')} of {counts.get('eval', 0) + counts.get('train', 0)} {unit}"
    sizes = split.get("rows", {})
    amounts = f"{sizes.get('eval')} {rows} held out, {sizes.get('train')} to train on"
    if split.get("source") == "snapshot":
        return (
            f"Held out: {held} ({amounts}), by the snapshot's split: the sha256 of each "
            f"{unit[:-1]} decides its side, so none is on both."
        )
    if split.get("source") == "run":
        return (
            f"Held out: {held} ({amounts}). The snapshot held none out (a {split['eval_fraction']}"
            f" share by hash came to none of so few), so the run held out the {unit} that rule "
            "picks first; none is on both sides."
        )
    if split.get("source") == "none":
        return (
            f"Nothing held out: the snapshot has {counts.get('train')} {unit} (a run holds some "
            f"out from {min_prompts}) or an eval fraction of 0, so there are no held-out metrics."
        )
    manifest = run.snapshot.manifest.get("rows", {})
    return (
        f"The snapshot has {manifest.get('train')} {rows} to train on and "
        f"{manifest.get('eval')} held out; the run's split is recorded when it starts."
    )


def recipe_rows(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    """The recipe's fields as (name, value) to read: an unset field says so, not ``None``."""
    return [(name, _shown(value)) for name, value in recipe.items()]


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def headline(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """The few final numbers a list of runs shows: the losses and one held-out score."""
    keys = ("train_loss", "eval_loss", "eval_accuracy", "eval_rewards/accuracies",
            "eval_mean_token_accuracy", "eval_perplexity", "reward_last_step")  # fmt: skip
    shown = [(key, metrics[key]) for key in keys if isinstance(metrics.get(key), int | float)]
    return shown[:3]


def compare_problem(ids: Sequence[int], runs: Sequence[TrainingRun]) -> str | None:
    """Why these runs cannot be compared, or None: two or more runs, all there, of one kind."""
    if len(ids) < 2:
        return "Pick two or more runs of the same kind to compare."
    missing = sorted(set(ids) - {run.pk for run in runs})
    if missing:
        return f"No run {', '.join(map(str, missing))}."
    kinds = sorted({run.get_kind_display() for run in runs})
    if len(kinds) > 1:
        return (
            f"These runs are of different kinds ({'; '.join(kinds)}): their losses and metrics "
            "measure different things. Compare runs of one kind."
        )
    return None


def compare_tables(runs: Sequence[TrainingRun]) -> dict[str, Any]:
    """Side by side: each run's final metrics (the union of their names) and the recipe fields
    whose values differ between them (the rest is the same for all)."""
    names: list[str] = []
    for run in runs:
        for key, *_ in final_numbers(run.kind, run.metrics):
            if key not in names:
                names.append(key)
    metric_rows = [
        (name, metric_label(name)[0] if name.startswith("eval_") else name,
         [run.metrics.get(name) for run in runs])
        for name in names
    ]  # fmt: skip
    fields: list[str] = []
    for run in runs:
        fields += [name for name in run.recipe if name not in fields]
    differing = [
        (name, [_shown(run.recipe.get(name)) for run in runs])
        for name in fields
        if len({repr(run.recipe.get(name)) for run in runs}) > 1
    ]
    return {"metric_rows": metric_rows, "recipe_differences": differing}
