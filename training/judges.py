"""How a simulated annotator judges, and how the oracle measures a policy.

A judge turns a leased task (as the API gives it) into a judgment body, as a person would submit
it: the synthetic task's rule oracle (``oracle_judgment``), or a reward model
(``reward_judgment``, RLAIF-style), each with ``noise``: the chance that two neighbouring ranks
swap. The oracle is also the measure: how far a judge agreed with it (``oracle_agreement``), and
how a policy's sampled answers fare (``oracle_quality``, ``oracle_win_rate``). ``simulate`` drives
the loop with them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from feedback.models import PolicyVersion
from feedback.serving import synthetic
from feedback.serving.backends import Sampling, get_backend, target_for

# A simulated annotator's judge: (the leased task, as the API gives it; rng) → a judgment body.
Judge = Callable[[dict[str, Any], random.Random], dict[str, Any]]
Scorer = Callable[[list[dict[str, str]], str], float]


def _with_noise(ranking: list[list[int]], noise: float, rng: random.Random) -> list[list[int]]:
    """A careless annotator's mistake: with probability ``noise``, two neighbouring groups swap."""
    if len(ranking) > 1 and rng.random() < noise:
        i = rng.randrange(len(ranking) - 1)
        ranking[i], ranking[i + 1] = ranking[i + 1], ranking[i]
    return ranking


def oracle_judgment(
    question: str, completions: list[dict[str, Any]], noise: float, rng: random.Random
) -> dict[str, Any]:
    texts = {c["id"]: c["text"] for c in completions}
    ranking = _with_noise(synthetic.oracle_ranking(question, texts), noise, rng)
    return {
        "ranking": ranking,
        "scores": {str(cid): synthetic.oracle_scores(question, t) for cid, t in texts.items()},
        "strength": "better" if len(ranking[0]) == 1 else "",
        "time_spent_ms": 0,
    }


def reward_judgment(
    *,
    prompt: list[dict[str, str]],
    completions: list[dict[str, Any]],
    rubric: dict[str, Any],
    score: Scorer,
    noise: float,
    rng: random.Random,
) -> dict[str, Any]:
    """A reward model's judgment of one task, in the shape a person submits.

    * ranking: the completions by reward, higher first, equal rewards tied in one group; then
      ``noise`` as for the oracle (two neighbouring groups swap).
    * scores: one reward cannot say on which axis an answer is good, so every axis gets the same
      score: the task's rewards min-max mapped onto the axis's scale (lowest → min, highest →
      max, rounded; all equal → the middle).
    * strength (best vs second, when one is best): the Bradley-Terry view the reward model was
      trained under, ``2·P(best beats second) - 1 = tanh(gap / 2)`` in [0, 1), as the rubric's
      label with the nearest margin (a gap of 0.5 is "slightly better", 4 "significantly").
    """
    rewards = {c["id"]: score(prompt, c["text"]) for c in completions}
    groups: dict[float, list[int]] = {}
    for cid, reward in rewards.items():
        groups.setdefault(reward, []).append(cid)
    ranked = [sorted(groups[reward]) for reward in sorted(groups, reverse=True)]
    ranking = _with_noise(ranked, noise, rng)

    low_reward, high_reward = min(rewards.values()), max(rewards.values())
    scores: dict[str, dict[str, int]] = {}
    for cid, reward in rewards.items():
        share = (
            (reward - low_reward) / (high_reward - low_reward) if high_reward > low_reward else 0.5
        )
        scores[str(cid)] = {
            axis["key"]: int(axis["min"]) + round(share * (int(axis["max"]) - int(axis["min"])))
            for axis in rubric["axes"]
        }

    strength = ""
    if len(ranking[0]) == 1:
        gap = max(0.0, rewards[ranking[0][0]] - rewards[ranking[1][0]])
        confidence = math.tanh(gap / 2)
        nearest = min(rubric["strength_labels"], key=lambda s: abs(s["margin"] - confidence))
        strength = nearest["key"]
    return {"ranking": ranking, "scores": scores, "strength": strength, "time_spent_ms": 0}


def oracle_agreement(
    *, question: str, texts: dict[int, str], ranking: list[list[int]]
) -> tuple[float, int]:
    """How far a judged ranking agrees with the oracle's, over the pairs the oracle ranks apart:
    1 for each the judge orders the same way, half for one it ties (as win rates count ties),
    0 for one it reverses. Returns (agreed, pairs); a coin-flipping judge agrees on half."""
    place = {cid: i for i, group in enumerate(ranking) for cid in group}
    truth = synthetic.oracle_ranking(question, texts)
    agreed, pairs = 0.0, 0
    for better_group, worse_group in itertools.combinations(truth, 2):
        for better, worse in itertools.product(better_group, worse_group):
            ours, theirs = place[better], place[worse]  # the judge's groups: lower is better
            agreed += 1.0 if ours < theirs else 0.5 if ours == theirs else 0.0
            pairs += 1
    return agreed, pairs


def _sampled(policy: PolicyVersion, questions: list[str], samples: int) -> list[list[str]]:
    """``samples`` answers per question at temperature 1, the way a round samples them."""
    prompts = [[{"role": "user", "content": q}] for q in questions]
    sampling = Sampling(temperature=1.0, max_new_tokens=48, seed=0)
    out = get_backend().generate(target_for(policy), prompts, n=samples, sampling=sampling)
    return [[g.text for g in answers] for answers in out]


def oracle_quality(
    policy: PolicyVersion, questions: list[str], *, samples: int = 4
) -> dict[str, float]:
    """Share of sampled answers that are right, and that are rude, by the oracle."""
    right = rude = total = 0
    for question, answers in zip(questions, _sampled(policy, questions, samples), strict=True):
        for answer in answers:
            scores = synthetic.oracle_scores(question, answer)
            right += scores["honest"] == 7
            rude += scores["harmless"] == 1
            total += 1
    total = max(1, total)
    return {"correctness": round(right / total, 4), "rudeness": round(rude / total, 4)}


def oracle_win_rate(
    new: PolicyVersion, old: PolicyVersion, questions: list[str], *, samples: int = 4
) -> float:
    """How often a sampled answer of ``new`` beats one of ``old`` by the oracle's total 3H
    score, over ``samples`` answers a question (a tie counts half)."""
    wins = total = 0.0
    sides = zip(_sampled(new, questions, samples), _sampled(old, questions, samples), strict=True)
    for question, (ours, theirs) in zip(questions, sides, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            delta = sum(synthetic.oracle_scores(question, a).values()) - sum(
                synthetic.oracle_scores(question, b).values()
            )
            wins += 1.0 if delta > 0 else 0.5 if delta == 0 else 0.0
            total += 1
    return round(wins / max(1, total), 4)
