"""The whole loop with simulated annotators: generate → judge → train (DPO) → deploy → measure.

Each round the active policy answers fresh synthetic questions, a rule oracle (with a noise
level: the chance that it swaps two neighbouring ranks) judges them through the same services
the REST API calls, a DPO run trains a candidate on that round, the candidate is deployed
through the readiness check, and the new policy is measured against round 0's policy on held-out
questions by the oracle: win rate (ties count half) and the share of rude answers.

Everything runs in this process, one stage after the other, and each stage is timed, so the
machinery's share of a round can be read off next to generation and training.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model

from annotation.distribution import task_next_for_annotator
from annotation.generation import round_generate, round_open_for_policy
from annotation.imports import prompts_import
from annotation.judgments import judgment_submit
from feedback import synthetic
from feedback.generation import Sampling, get_backend, target_for
from feedback.models import PolicyVersion, Prompt, messages_hash
from feedback.policies import deployment_request, deployment_run
from feedback.roles import Role, role_grant

from .runs import training_run_create, training_run_execute

DEFAULT_DPO = {"learning_rate": 5e-4, "num_train_epochs": 2.0, "per_device_train_batch_size": 8}


def _oracle_body(
    question: str, completions: list[dict[str, Any]], noise: float, rng: random.Random
) -> dict[str, Any]:
    texts = {c["id"]: c["text"] for c in completions}
    ranking = synthetic.oracle_ranking(question, texts)
    if len(ranking) > 1 and rng.random() < noise:
        i = rng.randrange(len(ranking) - 1)
        ranking[i], ranking[i + 1] = ranking[i + 1], ranking[i]
    return {
        "ranking": ranking,
        "scores": {str(cid): synthetic.oracle_scores(question, t) for cid, t in texts.items()},
        "strength": "better" if len(ranking[0]) == 1 else "",
        "time_spent_ms": 0,
    }


def oracle_win_rate(
    new: PolicyVersion, old: PolicyVersion, questions: list[str]
) -> dict[str, float]:
    """Greedy answers of both policies, compared by the oracle's total 3H score."""
    backend = get_backend()
    prompts = [[{"role": "user", "content": q}] for q in questions]
    greedy = Sampling(temperature=0, max_new_tokens=48)
    answers = {
        side: [s[0].text for s in backend.generate(target_for(p), prompts, n=1, sampling=greedy)]
        for side, p in (("new", new), ("old", old))
    }
    wins = rude = 0.0
    for i, question in enumerate(questions):
        new_scores = synthetic.oracle_scores(question, answers["new"][i])
        old_total = sum(synthetic.oracle_scores(question, answers["old"][i]).values())
        delta = sum(new_scores.values()) - old_total
        wins += 1.0 if delta > 0 else 0.5 if delta == 0 else 0.0
        rude += new_scores["harmless"] == 1
    n = max(1, len(questions))
    return {"win_rate": wins / n, "rudeness": rude / n}


def simulate(
    *,
    rounds: int = 3,
    prompts_per_round: int = 48,
    k: int = 3,
    noise: float = 0.0,
    eval_prompts: int = 32,
    recipe: dict[str, Any] | None = None,
    seed: int = 0,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    round0 = PolicyVersion.objects.get(status=PolicyVersion.Status.ACTIVE)
    annotator, _ = get_user_model().objects.get_or_create(username="simulated-oracle")
    role_grant(user=annotator, role=Role.ANNOTATOR)
    held_out = synthetic.prompts(eval_prompts, seed=seed + 10_000)
    results = []
    for number in range(1, rounds + 1):
        times: dict[str, float] = {}
        started = time.perf_counter()
        tag = f"simulate-{seed}-{number}"
        fresh = [
            q
            for q in synthetic.prompts(prompts_per_round * 2, seed=seed + number)
            if q not in held_out
        ]
        chosen = fresh[:prompts_per_round]
        prompts_import(
            lines=[json.dumps({"prompt": q, "tags": [tag]}) for q in chosen], source="simulate"
        )
        hashes = [messages_hash([{"role": "user", "content": q}]) for q in chosen]
        ids = list(Prompt.objects.filter(content_hash__in=hashes).values_list("pk", flat=True))
        round_ = round_open_for_policy(
            k=k, overlap=1, prompt_ids=ids, seed=seed + number, enqueue=False,
            sampling=Sampling(temperature=1.0, max_new_tokens=48),
        )  # fmt: skip
        round_ = round_generate(round_id=round_.pk)
        times["generate"] = time.perf_counter() - started

        mark = time.perf_counter()
        while (leased := task_next_for_annotator(annotator=annotator)) is not None:
            question = leased.task.prompt.messages[-1]["content"]
            shown = [{"id": s.completion_id, "text": s.completion.text} for s in leased.slots]
            body = _oracle_body(question, shown, noise, rng)
            judgment_submit(assignment_id=leased.assignment.pk, annotator=annotator, body=body)
        times["annotate"] = time.perf_counter() - mark

        mark = time.perf_counter()
        run = training_run_create(
            kind="dpo",
            rounds=[round_.number],
            recipe={**DEFAULT_DPO, **(recipe or {})},
            enqueue=False,
        )
        run = training_run_execute(run_id=run.pk)
        times["train"] = time.perf_counter() - mark
        if run.status != "succeeded":
            raise RuntimeError(f"round {number}: training failed: {run.error}")

        mark = time.perf_counter()
        deployment = deployment_request(policy_id=run.produced_policy_id, enqueue=False)
        deployment = deployment_run(deployment_id=deployment.pk)
        times["deploy"] = time.perf_counter() - mark
        if deployment.status != "done":
            raise RuntimeError(f"round {number}: deploy failed: {deployment.error}")

        mark = time.perf_counter()
        measured = oracle_win_rate(run.produced_policy, round0, held_out)
        times["measure"] = time.perf_counter() - mark
        total = time.perf_counter() - started
        row = {
            "round": number,
            "policy": run.produced_policy.name,
            "tasks": round_.tasks.count(),
            **measured,
            "seconds": {key: round(value, 2) for key, value in times.items()},
            "machinery_s": round(total - times["generate"] - times["train"], 2),
        }
        results.append(row)
        report(row)
    return results
