"""``manage.py simulate --rounds 3``: the loop end to end with simulated (oracle) annotators."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from training.simulate import simulate


class Command(BaseCommand):
    help = "Run generate → judge (oracle) → DPO → deploy → measure for N rounds on the tiny model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--prompts", type=int, default=48, help="Fresh questions per round.")
        parser.add_argument("--k", type=int, default=3)
        parser.add_argument("--noise", type=float, default=0.0, help="Oracle mistake rate.")
        parser.add_argument("--eval-prompts", type=int, default=32)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--recipe", type=json.loads, default=None, help="DPO recipe overrides.")

    def handle(self, *args: Any, **options: Any) -> None:
        header = f"{'round':>5} {'tasks':>6} {'win rate':>9} {'rudeness':>9} {'machinery s':>12}"
        self.stdout.write(f"{header}  stages (s)")

        def report(row: dict[str, Any]) -> None:
            self.stdout.write(
                f"{row['round']:>5} {row['tasks']:>6} {row['win_rate']:>9.2f} "
                f"{row['rudeness']:>9.2f} {row['machinery_s']:>12.1f}  {json.dumps(row['seconds'])}"
            )

        simulate(
            rounds=options["rounds"], prompts_per_round=options["prompts"], k=options["k"],
            noise=options["noise"], eval_prompts=options["eval_prompts"], seed=options["seed"],
            recipe=options["recipe"], report=report,
        )  # fmt: skip
