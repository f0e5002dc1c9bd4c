"""Demonstrations: ideal answers that annotators write or edit from a completion (SFT data).

The queue: a prompt is offered while an open round holds it, and also, after its round has
closed, while a current judgment of it says that none of its answers is acceptable
(``Judgment.none_acceptable``): those are the prompts that most need a good answer written.
Among the prompts with the fewest demonstrations, those come first. Once a prompt has a
demonstration it takes its place in the queue as any other (least covered first), and nobody
is offered a prompt they demonstrated or skipped.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, OuterRef, Q
from django.utils import timezone

from feedback.models import Completion, Prompt
from feedback.platform.errors import DomainError

from .models import ComparisonTask, Demonstration, DemonstrationSkip, Judgment, Round, Rubric

TEXT_MAX_CHARS = 20_000
REASON_MAX_CHARS = 500


def _wanted(prompt_ref: str = "pk") -> Exists:
    """A current judgment of the prompt (the outer query's ``prompt_ref``) found none of its
    answers acceptable."""
    return Exists(Judgment.objects.filter(task__prompt=OuterRef(prompt_ref), none_acceptable=True))


def _offered(prompt_ref: str = "pk") -> Q:
    """The prompt (the outer query's ``prompt_ref``) is in an open round, or wanted
    (``_wanted``) whatever its round."""
    in_open_round = Exists(
        ComparisonTask.objects.filter(prompt=OuterRef(prompt_ref), round__status=Round.Status.OPEN)
    )
    return Q(in_open_round) | Q(_wanted(prompt_ref))


def _fail(errors: dict[str, list[str]]) -> None:
    if errors:
        raise DomainError(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()), fields=errors
        )


def _text_errors(text: str) -> tuple[str, list[str]]:
    clean = text.strip()
    if not clean:
        return clean, ["Write the ideal answer; it may not be blank."]
    if len(clean) > TEXT_MAX_CHARS:
        return clean, [f"At most {TEXT_MAX_CHARS} characters, got {len(clean)}."]
    if "\x00" in clean:
        return clean, ["Must not contain NUL characters."]
    return clean, []


def prompt_next_for_demonstration(*, annotator: AbstractBaseUser) -> Prompt | None:
    """A prompt on offer (``_offered``) this annotator has neither demonstrated nor skipped,
    least covered first, and among those the ones judged to have no acceptable answer."""
    mine = Demonstration.objects.filter(prompt=OuterRef("pk"), author=annotator)
    skipped = DemonstrationSkip.objects.filter(prompt=OuterRef("pk"), annotator=annotator)
    return (
        Prompt.objects.filter(_offered())
        .exclude(Exists(mine))
        .exclude(Exists(skipped))
        .annotate(n=Count("demonstrations"), wanted=_wanted())
        .order_by("n", "-wanted", "id")
        .first()
    )


def prompt_rubric(*, prompt: Prompt) -> Rubric | None:
    """The rubric of the newest open round that offers this prompt (else of the newest round
    that judged it: a wanted prompt's round may have closed): its guidelines say what an ideal
    answer is."""
    task = (
        ComparisonTask.objects.filter(prompt=prompt)
        .select_related("round__rubric")
        .annotate(open=ExpressionWrapper(Q(round__status=Round.Status.OPEN), BooleanField()))
        .order_by("-open", "-round__number")
        .first()
    )
    return task.round.rubric if task else None


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
    prompt = Prompt.objects.filter(_offered(), pk=prompt_id).first()
    if prompt is None:
        errors["prompt"] = [f"No prompt {prompt_id}."]
    clean, text_errors = _text_errors(text)
    if text_errors:
        errors["text"] = text_errors
    if (
        source_completion_id is not None
        and prompt is not None
        and not Completion.objects.filter(pk=source_completion_id, prompt=prompt).exists()
    ):
        errors["source_completion"] = ["Not a completion of this prompt."]
    _fail(errors)
    return Demonstration.objects.create(
        prompt=prompt, author=author, text=clean, source_completion_id=source_completion_id
    )


def demonstration_last_editable(*, author: AbstractBaseUser) -> Demonstration | None:
    """The author's newest demonstration whose prompt an open round still offers."""
    return (
        Demonstration.objects.filter(author=author)
        .filter(_offered("prompt"))
        .select_related("prompt")
        .order_by("-created_at", "-id")
        .first()
    )


@transaction.atomic
def demonstration_edit(
    *, author: AbstractBaseUser, demonstration_id: int, text: str
) -> Demonstration:
    """Replace the text of one's own demonstration while its prompt's round is open. Another
    author's demonstration, or one whose round has closed, answers as if it did not exist."""
    demonstration = (
        Demonstration.objects.select_for_update()
        .filter(pk=demonstration_id, author=author)
        .filter(_offered("prompt"))
        .first()
    )
    if demonstration is None:
        raise DomainError(
            f"No demonstration {demonstration_id} of yours is open for editing.",
            code="not_found",
            status=404,
        )
    clean, text_errors = _text_errors(text)
    _fail({"text": text_errors} if text_errors else {})
    demonstration.text = clean
    demonstration.edited_at = timezone.now()
    demonstration.save(update_fields=["text", "edited_at"])
    return demonstration


def demonstration_skip(
    *, annotator: AbstractBaseUser, prompt_id: int, reason: str
) -> DemonstrationSkip:
    """Pass on a prompt, with a reason; it is not offered to this annotator again. Skipping the
    same prompt twice keeps the first skip (idempotent)."""
    errors: dict[str, list[str]] = {}
    prompt = Prompt.objects.filter(_offered(), pk=prompt_id).first()
    if prompt is None:
        errors["prompt"] = [f"No prompt {prompt_id}."]
    clean = reason.strip()
    if not clean:
        errors["reason"] = ["Say why you skip this prompt."]
    elif len(clean) > REASON_MAX_CHARS or "\x00" in clean:
        errors["reason"] = [f"At most {REASON_MAX_CHARS} characters, and no NUL characters."]
    _fail(errors)
    try:
        with transaction.atomic():
            return DemonstrationSkip.objects.create(
                prompt=prompt, annotator=annotator, reason=clean
            )
    except IntegrityError:
        return DemonstrationSkip.objects.get(prompt=prompt, annotator=annotator)
