"""The loop: ``simulate`` for 3 rounds on the tiny model, with the rule oracle as the annotators'
judge: wall time per stage, the share spent outside training and generation, and the oracle's
win rate of each round's policy against round 0's, as a chart.

Per round the stages are: generate (the round's completions), annotate (the simulated annotators
over the REST API), the reward and policy stages (their trainers' own time is ``train``), gate,
deploy, and measure (the oracle's evaluation, which only the benchmark does). The machinery is
what is left after training, generation, the simulated people, the gate's scoring and the
measuring: snapshots, queues, stage changes, deployment, the next round's opening.

DESIGN §10 targets: after 3 rounds the policy beats round 0 at least 0.70 of the time, rudeness
at most 0.05; the machinery adds under a minute per round on CPU. Run: ``make bench``, or
``python benchmarks/loop.py --rounds 3``. ``QUICK=1``: 32 prompts a round instead of 80
(simulate's default), and one seed instead of five (each seed about 90 s).

It works in a SQLite database and folder of its own (``var/bench/loop``), made anew each run; the
tiny model is built once into ``var/bench/artifacts``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = ROOT / "var" / "bench" / "loop"
os.environ["DJANGO_SETTINGS_MODULE"] = "feedback.settings"
os.environ["VAR_DIR"] = str(VAR)
os.environ["ARTIFACTS_DIR"] = str(ROOT / "var" / "bench" / "artifacts")
os.environ.pop("DATABASE_URL", None)  # its own SQLite file, whatever the shell points at
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.report import quick, results_write, verdict  # noqa: E402

TARGET = {"win_rate_vs_round0_after_3": 0.70, "rudeness_at_most": 0.05,
          "machinery_s_per_round_below": 60}  # fmt: skip
# The gate's stage is mostly scoring (the reward model and the KL drift: inference, like
# generation), so it is shown apart rather than counted as machinery.
NOT_MACHINERY = ("train", "generate", "annotate", "gate", "measure")
# The table's and the chart's columns, in order.
STAGES = ["generate", "annotate", "train", "gate", "deploy", "measure", "machinery"]


def tiny_policy_ready() -> None:
    from django.conf import settings

    from feedback.serving.policies import policy_register
    from feedback.serving.tiny_model import TinyRecipe, build_tiny_model, tiny_model_current

    output = Path(settings.ARTIFACTS_DIR) / settings.TINY_MODEL_DIR
    if not tiny_model_current(output, TinyRecipe()):
        build_tiny_model(output, TinyRecipe())
    policy_register(name="tiny-v0", base_model=settings.TINY_MODEL_DIR, activate_if_none=True)


def round_summary(row: dict[str, Any]) -> dict[str, Any]:
    seconds = row["seconds"]
    total = seconds["total"]
    machinery = total - sum(seconds.get(k, 0.0) for k in NOT_MACHINERY)
    return {
        "round": row["round"],
        "seconds": seconds,
        "machinery_s": round(machinery, 2),
        "share_outside_training_and_generation": round(
            1 - (seconds.get("train", 0.0) + seconds.get("generate", 0.0)) / total, 3
        ),
        "win_rate_vs_round0": row["win_rate_vs_round0"],
        "win_rate_vs_previous": row["win_rate_vs_previous"],
        "rudeness": row["rudeness"],
        "correctness": row["correctness"],
        "gate": row["gate"],
        "judgments": row["judgments"],
        "gate_judgments": row.get("gate_judgments", 0),
    }


def main() -> None:
    args = _arguments()
    _prepare()
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for seed in range(args.seed, args.seed + args.seeds):
        if by_seed:
            _database_reset()
        by_seed[seed] = _measure(args, seed=seed)
        _print_table(by_seed[seed])
    rounds = by_seed[args.seed]
    checks = _targets_check(rounds)
    if args.seeds > 1:
        _print_seeds(by_seed)
        checks.update(_seeds_check(by_seed))
    print("targets: " + "; ".join(f"{k}: {verdict(v)}" for k, v in checks.items()))
    results_write(
        "loop",
        {"rounds": args.rounds, "prompts_per_round": args.prompts, "targets": TARGET,
         "results": rounds, "seeds": {str(k): v for k, v in by_seed.items()},
         "verdicts": checks},
        chart=lambda plt: _chart(plt, rounds),
        command=f"python benchmarks/loop.py --rounds {args.rounds} --prompts {args.prompts} "
                f"--seed {args.seed} --seeds {args.seeds}"
                + (f" --human-gate {args.human_gate}" if args.human_gate is not None else ""),
    )  # fmt: skip


def _database_reset() -> None:
    """A new SQLite database for the next seed, and none of the last seed's runs, snapshots or
    exports (the tiny model stays; the broker's folders, made when the settings were read, too)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    connections.close_all()
    for path in VAR.glob("feedback.sqlite3*"):
        path.unlink()
    for folder in ("runs", "snapshots", "exports"):
        shutil.rmtree(Path(settings.ARTIFACTS_DIR) / folder, ignore_errors=True)
    call_command("migrate", verbosity=0)
    tiny_policy_ready()


def _print_seeds(by_seed: dict[int, list[dict[str, Any]]]) -> None:
    """Per seed and round: the oracle's win rate against round 0, correctness, rudeness, and
    what the gate decided (the reward model's win rate; people's, ties as half, and the lower
    end of the interval of their decisive win rate, which decides)."""
    print(f"\n{'seed':>5} {'round':>5} {'win vs r0':>9} {'correct':>8} {'rude':>5} "
          f"{'gate':>7} {'RM win':>7} {'human':>6} {'low':>5} {'failed on':>16}")  # fmt: skip
    for seed, rounds in by_seed.items():
        for r in rounds:
            gate = r["gate"] or {}
            human, low = gate.get("human_win_rate"), gate.get("human_lower_bound")
            print(f"{seed:>5} {r['round']:>5} {r['win_rate_vs_round0']:9.2f} "
                  f"{r['correctness']:8.2f} {r['rudeness']:5.2f} {gate.get('status', '-'):>7} "
                  f"{gate.get('win_rate') or 0:7.3f} "
                  f"{'-' if human is None else f'{human:.3f}':>6} "
                  f"{'-' if low is None else f'{low:.2f}':>5} "
                  f"{','.join(gate.get('failed_on') or []) or '-':>16}")  # fmt: skip


def _seeds_check(by_seed: dict[int, list[dict[str, Any]]]) -> dict[str, bool]:
    """The targets over every seed; a promoted round is one whose gate passed."""
    last = [rounds[-1] for rounds in by_seed.values()]
    promoted = [
        (seed, before, r)
        for seed, rounds in by_seed.items()
        for before, r in itertools.pairwise([{"correctness": ROUND0[seed]}, *rounds])
        if (r["gate"] or {}).get("status") == "passed"
    ]
    # Beyond its interval: below the lower end of the 95% interval of the correctness before
    # (a share of the 4 sampled answers to each held-out question).
    lowered = [(seed, r["round"]) for seed, before, r in promoted
               if r["correctness"] < _interval_low(before["correctness"])]  # fmt: skip
    at_all = [(seed, r["round"]) for seed, before, r in promoted
              if r["correctness"] < before["correctness"]]  # fmt: skip
    print(f"promoted rounds: {len(promoted)}; lowering correctness at all (seed, round): "
          f"{at_all or 'none'}; beyond its interval: {lowered or 'none'}")  # fmt: skip
    return {
        f"every seed's win rate vs round 0 after its last round >= 0.70 ({len(last)} seeds)":
            all(r["win_rate_vs_round0"] >= TARGET["win_rate_vs_round0_after_3"] for r in last),
        "every seed's rudeness <= 0.05":
            all(r["rudeness"] <= TARGET["rudeness_at_most"] for r in last),
        "no promoted round lowered correctness beyond its interval": not lowered,
    }  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32 if quick() else 80)  # simulate's
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1 if quick() else 5,
                        help="this many seeds (--seed, --seed + 1, ...), each in a fresh "
                             "database; the targets are checked over all of them (default 5, "
                             "1 with QUICK=1)")  # fmt: skip
    parser.add_argument("--human-gate", type=int, default=None, metavar="PROMPTS",
                        help="held-out prompts the simulated annotators judge each candidate "
                             "on, side by side (default: simulate's); 0: the reward model's "
                             "gate alone")  # fmt: skip
    return parser.parse_args()


def _prepare() -> None:
    """A fresh folder and database, migrated, and the tiny model built and registered."""
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    began = time.perf_counter()
    tiny_policy_ready()
    print(f"tiny model ready in {time.perf_counter() - began:.1f} s", flush=True)


# Each seed's round-0 correctness, measured before its rounds as simulate measures theirs.
ROUND0: dict[int, float] = {}
# The answers each correctness rests on: 4 sampled answers to each of 48 held-out questions.
CORRECTNESS_N = 4 * 48


def _interval_low(share: float) -> float:
    from annotation.quality import wilson_estimate

    return wilson_estimate(share * CORRECTNESS_N, CORRECTNESS_N).low


def _measure(args: argparse.Namespace, *, seed: int) -> list[dict[str, Any]]:
    """``simulate``'s rounds, each summed up as ``round_summary`` does."""
    from feedback.serving import synthetic
    from feedback.serving.policies import policy_active
    from training.judges import oracle_quality
    from training.simulate import simulate

    held_out = synthetic.prompts(48, seed=seed + 10_000)  # simulate's, for its default 48
    ROUND0[seed] = oracle_quality(policy_active(), held_out)["correctness"]
    gate = {} if args.human_gate is None else {"human_gate": args.human_gate}
    rows = simulate(rounds=args.rounds, prompts_per_round=args.prompts, seed=seed,
                    report=_round_print, progress=True, **gate)  # fmt: skip
    return [round_summary(row) for row in rows]


def _round_print(row: dict[str, Any]) -> None:
    s = row["seconds"]
    print(f"round {row['round']}: {s['total']:.0f} s; win rate vs round 0 "
          f"{row['win_rate_vs_round0']:.2f}, rudeness {row['rudeness']:.2f}",
          flush=True)  # fmt: skip


def _print_table(rounds: list[dict[str, Any]]) -> None:
    print()
    print(f"{'round':>5} " + " ".join(f"{s:>9}" for s in STAGES)
          + f" {'total':>7} {'outside':>8} {'win vs r0':>9} {'rude':>5}")  # fmt: skip
    for r in rounds:
        cells = [r["seconds"].get(s, 0.0) if s != "machinery" else r["machinery_s"]
                 for s in STAGES]  # fmt: skip
        print(f"{r['round']:>5} " + " ".join(f"{c:9.1f}" for c in cells)
              + f" {r['seconds']['total']:7.1f} "
              f"{r['share_outside_training_and_generation']:8.0%} "
              f"{r['win_rate_vs_round0']:9.2f} {r['rudeness']:5.2f}")  # fmt: skip


def _targets_check(rounds: list[dict[str, Any]]) -> dict[str, bool]:
    last = rounds[-1]
    return {
        f"win rate vs round 0 after {len(rounds)} rounds >= 0.70":
            last["win_rate_vs_round0"] >= TARGET["win_rate_vs_round0_after_3"],
        "rudeness <= 0.05": last["rudeness"] <= TARGET["rudeness_at_most"],
        "machinery < 60 s every round":
            all(r["machinery_s"] < TARGET["machinery_s_per_round_below"] for r in rounds),
    }  # fmt: skip


def _chart(plt: Any, rounds: list[dict[str, Any]]) -> Any:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    numbers = [r["round"] for r in rounds]
    bottom = [0.0] * len(rounds)
    for stage in STAGES:
        values = [r["machinery_s"] if stage == "machinery" else r["seconds"].get(stage, 0.0)
                  for r in rounds]  # fmt: skip
        left.bar(numbers, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_xlabel("round")
    left.set_ylabel("seconds")
    left.set_xticks(numbers)
    left.set_title("Wall time per stage")
    left.legend(fontsize=7)
    right.plot(numbers, [r["win_rate_vs_round0"] for r in rounds], marker="o",
               label="win rate vs round 0")  # fmt: skip
    right.plot(numbers, [r["win_rate_vs_previous"] for r in rounds], marker="s",
               label="win rate vs previous round")  # fmt: skip
    right.plot(numbers, [r["rudeness"] for r in rounds], marker="^", label="rudeness")
    right.axhline(TARGET["win_rate_vs_round0_after_3"], color="grey", linestyle="--",
                  label="target after 3 rounds")  # fmt: skip
    right.set_ylim(0, 1)
    right.set_xticks(numbers)
    right.set_xlabel("round")
    right.set_title("Oracle on held-out questions")
    right.legend(fontsize=7)
    return figure


if __name__ == "__main__":
    main()
