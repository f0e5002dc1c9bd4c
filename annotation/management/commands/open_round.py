"""``manage.py open_round --k 2 --overlap 3``: open a round from imported completions."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.rounds import round_open_from_imported
from feedback.platform.errors import DomainError


class Command(BaseCommand):
    help = "Open a round whose tasks compare completions already imported for each prompt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--k", type=int, required=True)
        parser.add_argument("--overlap", type=int, default=3)
        parser.add_argument("--tag", action="append", dest="tags", default=[])
        parser.add_argument("--include-used", action="store_true")
        parser.add_argument("--seed", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 2 <= options["k"] <= 16 or not 1 <= options["overlap"] <= 50:
            raise CommandError("--k must be 2..16 and --overlap 1..50.")
        try:
            round_, left_out = round_open_from_imported(
                k=options["k"],
                overlap=options["overlap"],
                tags=options["tags"],
                include_used=options["include_used"],
                seed=options["seed"],
            )
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            json.dumps(
                {
                    "round": round_.number,
                    "tasks": round_.tasks.count(),
                    "prompts_left_out": left_out,
                }
            )
        )
