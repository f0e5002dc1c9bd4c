"""Create an account with a role: ``manage.py adduser NAME --role annotator --password PW``."""

from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from feedback.platform.roles import Role, role_grant


class Command(BaseCommand):
    help = "Create a user with a role (annotator, admin or researcher)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=[r.value for r in Role])
        secret = parser.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password", help="The password (visible in the process list).")
        secret.add_argument(
            "--password-stdin", action="store_true", help="Read the password from standard input."
        )
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--update",
            action="store_true",
            help="Set the password and add the role if the user exists.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = (
            sys.stdin.readline().rstrip("\n") if options["password_stdin"] else options["password"]
        )
        if not password:
            raise CommandError("The password is empty.")
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=options["username"]).first()
            if user is not None and not options["update"]:
                raise CommandError(
                    f"User {options['username']!r} exists; pass --update to change it."
                )
            if user is None:
                user = User(username=options["username"], email=options["email"])
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            user.set_password(password)
            user.save()
            role_grant(user=user, role=Role(options["role"]))
        self.stdout.write(f"{user.get_username()}: {options['role']}")
