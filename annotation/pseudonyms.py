"""Who is who behind the pseudonymous annotator ids the exports carry
(``exports.annotator_pseudonym``).

Read-only selectors for admins, who manage annotators and may need to act on what a pseudonym
did; a researcher's pages show pseudonyms only and never call these. ``leaderboard_pseudonym``
is the other kind: what annotators call each other on a round's leaderboard.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from .exports import annotator_pseudonym
from .models import Demonstration, Judgment


@dataclass(frozen=True)
class PseudonymEntry:
    pseudonym: str
    username: str


def usernames_by_id(*, user_ids: Iterable[int]) -> dict[int, str]:
    """{user id: username} of these users (absent ids are left out)."""
    return dict(
        get_user_model().objects.filter(pk__in=list(user_ids)).values_list("pk", "username")
    )


def pseudonym_directory(*, rounds: list[int] | None = None) -> list[PseudonymEntry]:
    """Every annotator an export of ``rounds`` (all when empty or None) can name, by
    username: those with judgments in the rounds, and every author of a demonstration (the SFT
    format names them; a few more names than one export needs is harmless here)."""
    judges = Judgment.objects.all()
    if rounds:
        judges = judges.filter(task__round__number__in=rounds)
    users = get_user_model().objects.filter(
        Q(pk__in=judges.values("annotator_id"))
        | Q(pk__in=Demonstration.objects.values("author_id"))
    )
    return [
        PseudonymEntry(pseudonym=annotator_pseudonym(pk), username=username)
        for pk, username in users.order_by("username").values_list("pk", "username")
    ]


def leaderboard_pseudonym(*, user_id: int, round_number: int) -> str:
    """An annotator's name on round ``round_number``'s leaderboard: a keyed hash of the round
    and the user. Keyed apart from the exports' pseudonyms and per round, so that peers can
    neither find a colleague's rows in an exported dataset nor follow one person from round to
    round."""
    digest = hmac.new(
        settings.PSEUDONYM_KEY.encode(),
        f"leaderboard:{round_number}:{user_id}".encode(),
        hashlib.sha256,
    )
    return f"Annotator {digest.hexdigest()[:6].upper()}"
