"""``manage.py simulate --rounds 3 --annotators 8``: the loop end to end, simulated annotators."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.platform.errors import DomainError
from training.simulate import (
    FIRST_FILTER,
    HUMAN_GATE_PROMPTS,
    JUDGES,
    PROMPTS_PER_ROUND,
    SELECTIONS,
    SimulationError,
    simulate,
)


class Command(BaseCommand):
    help = (
        "Run N automatic rounds on the serving (tiny) policy with simulated annotators (judged "
        "by the rule oracle or a reward model) through the REST API; print one JSON line per "
        "round."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--annotators", type=int, default=1)
        parser.add_argument(
            "--noise", type=float, default=0.0, help="The judge's mistake rate (a neighbour swap)."
        )
        parser.add_argument(
            "--judge",
            choices=JUDGES,
            default="oracle",
            help="Who the annotators ask: the rule oracle, or a reward model (--judge-reward-run). "
            "The oracle measures every round either way.",
        )
        parser.add_argument(
            "--judge-reward-run",
            type=int,
            default=None,
            metavar="ID",
            help="The succeeded reward-model training run that judges, with --judge reward.",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--prompts",
            type=int,
            default=PROMPTS_PER_ROUND,
            help=f"Prompts per round. Default: {PROMPTS_PER_ROUND}.",
        )
        parser.add_argument("--k", type=int, default=4, help="Completions per task.")
        parser.add_argument("--eval-prompts", type=int, default=48, help="Held-out questions.")
        parser.add_argument(
            "--gate-threshold",
            type=float,
            default=None,
            help="The reward model's gate: the win rate a candidate needs by its scores. "
            f"Default: {FIRST_FILTER} before people (a first filter), 0.5 alone.",
        )
        parser.add_argument(
            "--human-gate",
            type=int,
            default=HUMAN_GATE_PROMPTS,
            metavar="PROMPTS",
            help="Held-out prompts on which the simulated annotators compare a candidate that "
            "passed the reward model's gate with the serving policy, side by side; they decide. "
            f"0: the reward model's gate alone. Default: {HUMAN_GATE_PROMPTS}.",
        )
        parser.add_argument(
            "--human-gate-threshold",
            type=float,
            default=0.5,
            help="The lower end of the human win rate's 95%% interval a candidate needs.",
        )
        parser.add_argument(
            "--selection",
            choices=SELECTIONS,
            default="random",
            help="How rounds after the first choose their prompts: uncertainty keeps those the "
            "previous round's reward model is least sure about (active learning).",
        )
        parser.add_argument(
            "--pool",
            type=int,
            default=None,
            help="With --selection uncertainty: unused prompts scored per round (default: "
            "twice --prompts).",
        )
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

        # The flags' names in the message a user sees; simulate() checks the rest (the run).
        if options["judge"] == "reward" and options["judge_reward_run"] is None:
            raise CommandError("--judge reward needs --judge-reward-run ID (a reward-model run).")
        if options["judge"] == "oracle" and options["judge_reward_run"] is not None:
            raise CommandError("--judge-reward-run is only for --judge reward.")
        try:
            simulate(
                rounds=options["rounds"], prompts_per_round=options["prompts"], k=options["k"],
                annotators=options["annotators"], noise=options["noise"],
                judge=options["judge"], judge_reward_run=options["judge_reward_run"],
                eval_prompts=options["eval_prompts"], seed=options["seed"],
                policy_recipe=options["recipe"], reward_recipe=options["reward_recipe"],
                gate_threshold=options["gate_threshold"], selection=options["selection"],
                human_gate=options["human_gate"],
                human_gate_threshold=options["human_gate_threshold"],
                pool=options["pool"], url=options["url"], report=report,
                progress=True,
            )  # fmt: skip
        except (SimulationError, DomainError) as exc:  # what to run instead, not a traceback
            raise CommandError(str(exc)) from exc
