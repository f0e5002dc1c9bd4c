"""Demonstrations: ideal answers that annotators write or edit from a completion (SFT data)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef

from feedback.errors import DomainError
from feedback.models import Completion, Prompt

from .models import ComparisonTask, Demonstration, Round

TEXT_MAX_CHARS = 20_000


def prompt_next_for_demonstration(*, annotator: AbstractBaseUser) -> Prompt | None:
    """A prompt of an open round this annotator has not demonstrated yet, least covered first."""
    in_open_round = ComparisonTask.objects.filter(
        prompt=OuterRef("pk"), round__status=Round.Status.OPEN
    )
    mine = Demonstration.objects.filter(prompt=OuterRef("pk"), author=annotator)
    return (
        Prompt.objects.filter(Exists(in_open_round))
        .exclude(Exists(mine))
        .annotate(n=Count("demonstrations"))
        .order_by("n", "id")
        .first()
    )


def demonstration_create(
    *,
    author: AbstractBaseUser,
    prompt_id: int,
    text: str,
    source_completion_id: int | None = None,
) -> Demonstration:
    errors: dict[str, list[str]] = {}
    # Only a prompt an open round offers: others (never served, or in a closed round) answer
    # as if they did not exist, so demonstrations cannot be planted nor ids probed.
    offered = ComparisonTask.objects.filter(prompt=OuterRef("pk"), round__status=Round.Status.OPEN)
    prompt = Prompt.objects.filter(Exists(offered), pk=prompt_id).first()
    if prompt is None:
        errors["prompt"] = [f"No prompt {prompt_id}."]
    clean = text.strip()
    if not clean:
        errors["text"] = ["Write the ideal answer; it may not be blank."]
    elif len(clean) > TEXT_MAX_CHARS:
        errors["text"] = [f"At most {TEXT_MAX_CHARS} characters, got {len(clean)}."]
    elif "\x00" in clean:
        errors["text"] = ["Must not contain NUL characters."]
    if (
        source_completion_id is not None
        and prompt is not None
        and not Completion.objects.filter(pk=source_completion_id, prompt=prompt).exists()
    ):
        errors["source_completion"] = ["Not a completion of this prompt."]
    if errors:
        raise DomainError(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()), fields=errors
        )
    return Demonstration.objects.create(
        prompt=prompt, author=author, text=clean, source_completion_id=source_completion_id
    )
