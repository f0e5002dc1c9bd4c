"""``manage.py build_tiny_model``: train the tiny offline model and register it as a policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from feedback.serving.policies import policy_register
from feedback.serving.tiny_model import TinyRecipe, build_tiny_model


class Command(BaseCommand):
    help = "Build the tiny Llama model offline on CPU (about a minute) and register it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--pretrain-steps", type=int, default=TinyRecipe.pretrain_steps)
        parser.add_argument("--sft-steps", type=int, default=TinyRecipe.sft_steps)
        parser.add_argument(
            "--output", default=settings.TINY_MODEL_DIR, help="Under ARTIFACTS_DIR."
        )
        parser.add_argument("--name", default="tiny-llama-v0", help="Policy version name.")
        parser.add_argument("--force", action="store_true", help="Rebuild even if it exists.")

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(settings.ARTIFACTS_DIR).resolve()
        output = (root / options["output"]).resolve()
        if not output.is_relative_to(root):
            self.stderr.write("--output must stay under ARTIFACTS_DIR")
            return
        if (output / "meta.json").exists() and not options["force"]:
            self.stdout.write(f"tiny model already built at {options['output']}")
        else:
            recipe = TinyRecipe(
                seed=options["seed"],
                pretrain_steps=options["pretrain_steps"],
                sft_steps=options["sft_steps"],
            )
            meta = build_tiny_model(output, recipe, progress=self.stderr.isatty())
            self.stdout.write(json.dumps({k: v for k, v in meta.items() if k != "recipe"}))
        policy = policy_register(
            name=options["name"],
            base_model=str(output.relative_to(root)),
            activate_if_none=True,
        )
        self.stdout.write(f"policy {policy.name} ({policy.status})")
