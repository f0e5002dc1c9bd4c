"""Training overhead: a platform reward-model run and DPO run against a bare TRL script.

Both train on the same snapshot files (synthetic preference pairs: a right, polite answer over a
wrong or rude one, a tenth of the prompts held out as the snapshot's eval split, as the platform's
snapshots hold them out) from the same tiny model with the same recipe and seed, and both evaluate
on the held-out split ten times, as a platform run does by default. The platform side is
``training_run_execute``: the claim, heartbeat and progress writes, cancel checks, checkpoints,
TensorBoard logs, provenance and the rename into place. The bare side builds TRL's config and
trainer from the same recipe and calls ``train()`` and ``save_model()``. Runs alternate; the
table gives median seconds and the ratio (DESIGN target: platform at most 1.10 times bare). Run:
``make bench``.

It works in a database and artifacts folder of its own (``var/bench/training``), so it never
touches the demo's data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedback.settings")
os.environ["VAR_DIR"] = str(ROOT / "var" / "bench" / "training")
os.environ.pop("DATABASE_URL", None)  # its own SQLite file, whatever the shell points at
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.report import quick, results_write, spread, verdict  # noqa: E402

TARGET_RATIO = 1.10

RECIPES = {
    "reward": {"use_lora": False, "learning_rate": 1e-3, "num_train_epochs": 2.0,
               "per_device_train_batch_size": 16, "max_length": 128, "checkpoint_every": 50},
    "dpo": {"use_lora": False, "learning_rate": 1e-3, "sft_weight": 1.0, "num_train_epochs": 2.0,
            "per_device_train_batch_size": 32, "max_length": 128, "checkpoint_every": 50},
}  # fmt: skip


def synthetic_pairs(n: int, seed: int) -> list[dict]:
    from feedback.serving import synthetic

    rng = random.Random(seed)
    rows = []
    for text in synthetic.prompts(n, seed=seed):
        kind = "capital" if "capital" in text else "arithmetic"
        question = synthetic.Question(text, synthetic.expected_answer(text), kind)
        good = synthetic.answer_for(question, correct=True, polite=True, rng=rng)
        bad = synthetic.answer_for(question, correct=rng.random() < 0.5, polite=False, rng=rng)
        rows.append({
            "prompt": [{"role": "user", "content": text}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}], "margin": 1.0,
        })  # fmt: skip
    return rows


def bare_trl(kind: str, model_dir: Path, snapshot_dir: Path, out: Path, recipe: dict) -> None:
    """What a user would write with TRL alone, the same settings as the platform's trainer."""
    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        set_seed,
    )
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    data = load_dataset("json", data_files={"train": str(snapshot_dir / "train.jsonl"),
                                            "eval": str(snapshot_dir / "eval.jsonl")})  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = dict(
        output_dir=str(out), learning_rate=recipe["learning_rate"],
        num_train_epochs=recipe["num_train_epochs"], max_length=recipe["max_length"],
        per_device_train_batch_size=recipe["per_device_train_batch_size"], seed=42,
        logging_steps=1, save_strategy="steps", save_steps=recipe["checkpoint_every"],
        eval_strategy="steps", eval_steps=0.1,
        per_device_eval_batch_size=recipe["per_device_train_batch_size"],
        save_total_limit=1, report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False,
        disable_tqdm=True,
    )  # fmt: skip
    if kind == "reward":
        set_seed(42)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        trainer = RewardTrainer(model=model, args=RewardConfig(**common),
                                train_dataset=data["train"], eval_dataset=data["eval"],
                                processing_class=tokenizer)  # fmt: skip
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        config = DPOConfig(**common, beta=0.1, loss_type=["sigmoid", "sft"], loss_weights=[1, 1])
        data = data.remove_columns("margin")
        trainer = DPOTrainer(model=model, args=config, train_dataset=data["train"],
                             eval_dataset=data["eval"], processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model(str(out / "model"))


def main() -> None:
    args = _arguments()
    root, model_dir, policy = _prepare()
    snapshot_dir, snapshot, pairs = _snapshot_prepare(root, pairs=args.pairs)
    seconds = _measure(args.repeats, root=root, model_dir=model_dir, policy=policy,
                       snapshot_dir=snapshot_dir, snapshot=snapshot)  # fmt: skip
    result = _summarize(seconds)
    ratios = {kind: result[f"{kind}: platform"]["ratio"] for kind in RECIPES}
    checks = {f"{kind} platform <= 1.10x bare": r <= TARGET_RATIO for kind, r in ratios.items()}
    _print_table(result)
    print(f"{pairs} pairs, {args.repeats} alternating repeats; targets: "
          + "; ".join(f"{k}: {verdict(v)}" for k, v in checks.items()))  # fmt: skip
    results_write(
        "training_overhead",
        {"pairs": pairs, "repeats": args.repeats, "target_ratio_at_most": TARGET_RATIO,
         "results": result, "ratios": ratios, "verdicts": checks},
        chart=lambda plt: _chart(plt, result, ratios),
        command=f"python benchmarks/training_overhead.py --pairs {args.pairs} "
        f"--repeats {args.repeats}",
    )  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=150 if quick() else 300)
    parser.add_argument("--repeats", type=int, default=2 if quick() else 3)
    return parser.parse_args()


def _prepare() -> tuple[Path, Path, Any]:
    """The benchmark's database, migrated, and the tiny model built where it is missing or stale
    and registered; the artifacts folder, the model's folder and its policy version."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from feedback.serving.policies import policy_register
    from feedback.serving.tiny_model import TinyRecipe, build_tiny_model, tiny_model_current

    call_command("migrate", verbosity=0)
    root = Path(settings.ARTIFACTS_DIR)
    model_dir = root / "models" / "tiny-bench"
    if not tiny_model_current(model_dir, TinyRecipe()):
        build_tiny_model(model_dir, TinyRecipe(), progress=False)
    policy = policy_register(name="tiny-bench", base_model="models/tiny-bench",
                             activate_if_none=True)  # fmt: skip
    return root, model_dir, policy


def _snapshot_prepare(root: Path, *, pairs: int) -> tuple[Path, Any, int]:
    """Synthetic preference pairs written as a snapshot both sides train on, a tenth of the
    prompts held out by the platform's own rule (``training.snapshots.is_eval``); its folder,
    its record and how many pairs it holds."""
    from training.models import DatasetSnapshot
    from training.snapshots import is_eval

    snapshot_dir = root / "snapshots" / "bench"
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    rows = synthetic_pairs(min(pairs, 400), seed=5)
    split: dict[str, list[dict]] = {"train": [], "eval": []}
    for row in rows:
        split["eval" if is_eval(row["prompt"], 0.1) else "train"].append(row)
    for name, part in split.items():
        (snapshot_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    counts = {name: len(part) for name, part in split.items()}
    snapshot, _ = DatasetSnapshot.objects.update_or_create(
        path="snapshots/bench", defaults={"kind": "preference", "sha256": "bench",
                                          "manifest": {"rows": counts}},
    )  # fmt: skip
    return snapshot_dir, snapshot, len(rows)


def _measure(
    repeats: int, *, root: Path, model_dir: Path, policy: Any, snapshot_dir: Path, snapshot: Any
) -> dict[str, list[float]]:
    """Seconds of each kind's bare TRL script and platform run, alternating, ``repeats`` times."""
    from training.execution import training_run_execute
    from training.models import TrainingRun
    from training.runs import recipe_validate

    seconds: dict[str, list[float]] = {}
    for _ in range(repeats):
        for kind, overrides in RECIPES.items():
            recipe = vars(recipe_validate(kind, overrides))
            scratch = root / "bench-bare"
            shutil.rmtree(scratch, ignore_errors=True)
            began = time.perf_counter()
            bare_trl(kind, model_dir, snapshot_dir, scratch, recipe)
            seconds.setdefault(f"{kind}: bare TRL", []).append(time.perf_counter() - began)

            run = TrainingRun.objects.create(kind=kind, base_policy=policy, snapshot=snapshot,
                                             recipe=recipe)  # fmt: skip
            began = time.perf_counter()
            run = training_run_execute(run_id=run.pk)
            seconds.setdefault(f"{kind}: platform", []).append(time.perf_counter() - began)
            assert run.status == "succeeded", run.error
    return seconds


def _summarize(seconds: dict[str, list[float]]) -> dict[str, Any]:
    """Per kind and side, the spread of the seconds and the median's ratio to bare TRL's."""
    result: dict[str, Any] = {}
    for kind in RECIPES:
        base = statistics.median(seconds[f"{kind}: bare TRL"])
        for side in ("bare TRL", "platform"):
            values = seconds[f"{kind}: {side}"]
            median = statistics.median(values)
            result[f"{kind}: {side}"] = {**spread(values), "ratio": median / base}
    return result


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'':20} {'seconds (median)':>17} {'spread':>14} {'ratio':>7}")
    for name, r in result.items():
        span = f"{r['min']:.2f}-{r['max']:.2f}"
        print(f"{name:20} {r['median']:17.2f} {span:>14} {r['ratio']:7.3f}")


def _chart(plt: Any, result: dict[str, Any], ratios: dict[str, float]) -> Any:
    figure, axes = plt.subplots(figsize=(6, 4))
    xs = list(range(len(RECIPES)))
    for offset, side in ((-0.2, "bare TRL"), (0.2, "platform")):
        axes.bar([x + offset for x in xs],
                 [result[f"{kind}: {side}"]["median"] for kind in RECIPES], width=0.4,
                 label=side)  # fmt: skip
    axes.set_xticks(xs, [f"{kind}\n{ratios[kind]:.2f}x" for kind in RECIPES])
    axes.set_ylabel("seconds (median)")
    axes.set_title("Training: platform run against a bare TRL script")
    axes.legend()
    return figure


if __name__ == "__main__":
    main()
