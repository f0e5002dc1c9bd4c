"""``manage.py seed_demo``: demo accounts, the bundled demo prompts and an open round.

Accounts ``admin``, ``researcher`` and ``annotator1..3`` get the password ``demo``. They are meant
for a server that listens on 127.0.0.1 only, so the command refuses to run under production
settings. Running it again changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.imports import prompts_import
from annotation.models import Round
from annotation.rounds import round_open_from_imported
from feedback.roles import Role, role_grant

DEMO_FILE = Path(__file__).resolve().parents[2] / "data" / "demo_prompts.jsonl"
DEMO_PASSWORD = "demo"
DEMO_USERS = [("admin", Role.ADMIN), ("researcher", Role.RESEARCHER)] + [
    (f"annotator{i}", Role.ANNOTATOR) for i in (1, 2, 3)
]


class Command(BaseCommand):
    help = "Seed the local demo: accounts (password 'demo'), demo prompts and an open round."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("The demo accounts have a known password; not under production.")
        User = get_user_model()
        with transaction.atomic():
            for username, role in DEMO_USERS:
                user, created = User.objects.get_or_create(username=username)
                if created:
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                role_grant(user=user, role=role)
            with DEMO_FILE.open("rb") as handle:
                report = prompts_import(lines=handle, source="demo")
            if not Round.objects.exists():
                round_, _ = round_open_from_imported(k=3, overlap=1, seed=0)
                self.stdout.write(f"opened round {round_.number} with {round_.tasks.count()} tasks")
        self.stdout.write(
            f"demo ready: {report.prompts_created} new prompts; sign in as admin, researcher or "
            f"annotator1..3 with password '{DEMO_PASSWORD}'"
        )
