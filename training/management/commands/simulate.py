"""``manage.py simulate --rounds 3 --annotators 8``: the loop end to end, simulated annotators."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from training.simulate import simulate


class Command(BaseCommand):
    help = (
        "Run N automatic rounds on the serving (tiny) policy with simulated oracle annotators "
        "through the REST API; print one JSON line per round."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--annotators", type=int, default=1)
        parser.add_argument("--noise", type=float, default=0.0, help="Oracle mistake rate.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--prompts", type=int, default=64, help="Prompts per round.")
        parser.add_argument("--k", type=int, default=4, help="Completions per task.")
        parser.add_argument("--eval-prompts", type=int, default=48, help="Held-out questions.")
        parser.add_argument("--gate-threshold", type=float, default=0.5)
        parser.add_argument("--recipe", type=json.loads, default=None, help="DPO overrides.")
        parser.add_argument("--reward-recipe", type=json.loads, default=None)
        parser.add_argument(
            "--url",
            default=None,
            help="A running server (e.g. http://127.0.0.1:8000) whose workers do the jobs; "
            "by default the jobs run in this process.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        def report(row: dict[str, Any]) -> None:
            self.stdout.write(json.dumps(row))
            self.stdout.flush()

        simulate(
            rounds=options["rounds"], prompts_per_round=options["prompts"], k=options["k"],
            annotators=options["annotators"], noise=options["noise"],
            eval_prompts=options["eval_prompts"], seed=options["seed"],
            policy_recipe=options["recipe"], reward_recipe=options["reward_recipe"],
            gate_threshold=options["gate_threshold"], url=options["url"], report=report,
            progress=True,
        )  # fmt: skip
