"""One task as a researcher studies it: the prompt, the answers in the order annotators saw
them, every judgment, the consensus and the agreement; and the form where an admin makes the
task gold. Researchers see annotators by pseudonym; admins also see who is behind each one."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from annotation.consensus import task_consensus
from annotation.exports import annotator_pseudonym
from annotation.gold import task_mark_gold, task_unmark_gold
from annotation.models import ComparisonTask, Judgment
from annotation.pseudonyms import usernames_by_id
from annotation.quality import gold_pair_score, task_agreement
from annotation.selectors import task_completion_ids, task_get, task_judgments, task_slots
from feedback.platform.errors import DomainError
from feedback.platform.rendering import render_untrusted
from feedback.platform.roles import Role, user_roles

from .views import role_required

LETTERS = "ABCDEFGHIJKLMNOP"  # a round has at most 16 completions per task


def _ranking_text(ranking: list[list[int]], names: dict[int, str]) -> str:
    """``A > B = C`` with answer letters from ``names`` (ids where it has none); a tie is
    written in the order the answers were shown."""
    return " > ".join(
        " = ".join(
            names.get(cid, str(cid)) for cid in sorted(group, key=lambda c: (names.get(c, ""), c))
        )
        for group in ranking
    )


def _parse_ranking(text: str, completion_ids: list[int]) -> list[list[int]]:
    """``"12 > 13 = 14"`` (completion ids) or ``"A > B = C"`` (answer letters) to groups of
    completion ids, best first; ``=`` ties. The gold service checks the ids themselves."""
    letters = dict(zip(LETTERS, completion_ids, strict=False))
    groups = []
    for part in text.split(">"):
        group = []
        for token in (t.strip() for t in part.split("=")):
            if token.isascii() and token.isdigit():
                group.append(int(token))
            elif token.upper() in letters:
                group.append(letters[token.upper()])
            else:
                reason = f"{token!r} is neither a completion id nor an answer letter."
                if not token:
                    reason = "Write groups like 12 > 13 = 14 (or A > B = C), best first."
                raise DomainError(f"ranking: {reason}", fields={"ranking": [reason]})
        groups.append(group)
    return groups


def _task_context(task: ComparisonTask, *, names: bool) -> dict[str, Any]:
    slots = task_slots(task=task)
    ids = [slot.completion_id for slot in slots]
    letter = dict(zip(ids, LETTERS, strict=False))
    rubric = task.round.rubric
    judgments = task_judgments(task=task)
    usernames = usernames_by_id(user_ids={j.annotator_id for j in judgments}) if names else {}
    consensus = task_consensus(ids, [(j.ranking, 1.0) for j in judgments]) if judgments else None
    groups = consensus.groups() if consensus else []
    return {
        "task": task,
        "prompt_messages": [
            # render_untrusted: Markdown without raw HTML, then an allow-list sanitizer.
            {"role": m["role"], "html": mark_safe(render_untrusted(m["content"]))}
            for m in task.prompt.messages
        ],
        "completions": [
            {
                "letter": letter[slot.completion_id],
                "id": slot.completion_id,
                "policy": slot.completion.policy_version.name,
                "html": mark_safe(render_untrusted(slot.completion.text)),
            }
            for slot in slots
        ],
        "axes": rubric.axes,
        "judgments": [_judgment_row(j, letter, usernames, task) for j in judgments],
        "consensus": _ranking_text(groups, letter) if groups else None,
        "consensus_pairs": [
            (letter[a], letter[b], round(consensus.probability(a, b), 3))
            for a, b, _ in consensus.pairs()
        ]
        if consensus
        else [],
        "agreement": task_agreement([j.ranking for j in judgments]),
        "gold": _ranking_text(task.gold_ranking, letter) if task.is_gold else None,
        "gold_default": _ranking_text(task.gold_ranking or groups or [ids], {}),
    }


def _judgment_row(
    judgment: Judgment, letter: dict[int, str], usernames: dict[int, str], task: ComparisonTask
) -> dict[str, Any]:
    rubric = judgment.rubric
    strengths = {s["key"]: s["label"] for s in rubric.strength_labels}
    flags = {f["key"]: f["label"] for f in rubric.flags}
    gold = gold_pair_score(judgment.ranking, task.gold_ranking) if task.is_gold else None
    return {
        "annotator": annotator_pseudonym(judgment.annotator_id),
        "username": usernames.get(judgment.annotator_id),
        "ranking": _ranking_text(judgment.ranking, letter),
        "scores": [
            (letter[int(cid)], [per_axis.get(a["key"], "—") for a in rubric.axes])
            for cid, per_axis in sorted(
                judgment.scores.items(), key=lambda item: letter.get(int(item[0]), "")
            )
        ],
        "strength": strengths.get(judgment.strength, judgment.strength),
        "flags": [flags.get(f, f) for f in judgment.flags],
        "rationale": judgment.rationale,
        "seconds": round(judgment.time_spent_ms / 1000),
        "created_at": judgment.created_at,
        "gold": gold,
    }


def _render_task(
    request: HttpRequest, task_id: int, *, form: dict[str, Any] | None = None, status: int = 200
) -> HttpResponse:
    task = task_get(task_id=task_id)
    if task is None:
        raise Http404(f"No task {task_id}.")
    is_admin = Role.ADMIN in user_roles(request.user)
    context = _task_context(task, names=is_admin)
    context["is_admin"] = is_admin
    context["form"] = form or {"ranking": context["gold_default"], "errors": []}
    return render(request, "frontend/research_task.html", context, status=status)


@role_required(Role.RESEARCHER, Role.ADMIN)
def research_task(request: HttpRequest, task_id: int) -> HttpResponse:
    return _render_task(request, task_id)


@require_POST
@role_required(Role.ADMIN)
def research_task_gold(request: HttpRequest, task_id: int) -> HttpResponse:
    """Mark a task gold with the reference ranking typed in the form, or unmark it."""
    text = request.POST.get("ranking", "")
    try:
        if request.POST.get("action") == "unmark":
            task_unmark_gold(task_id=task_id)
            messages.success(request, f"Task {task_id} is an ordinary task again.")
        else:
            ids = task_completion_ids(task_id=task_id)
            task = task_mark_gold(task_id=task_id, ranking=_parse_ranking(text, ids))
            letters = dict(zip(ids, LETTERS, strict=False))
            messages.success(
                request,
                f"Task {task_id} is gold: {_ranking_text(task.gold_ranking, letters)}. Every "
                f"annotator of round {task.round.number} will be served it once.",
            )
    except DomainError as exc:
        if exc.status == 404:
            raise Http404(exc.detail) from None
        errors = [
            f"{path}: {reason}" if path != "ranking" else reason
            for path, reasons in exc.fields.items()
            for reason in reasons
        ] or [exc.detail]
        return _render_task(request, task_id, form={"ranking": text, "errors": errors}, status=400)
    return redirect("frontend:research-task", task_id=task_id)
