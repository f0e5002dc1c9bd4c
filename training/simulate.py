"""The whole loop with simulated annotators, through the REST API: import → round → judge →
reward model → DPO → gate → deploy → next round, and measured by an oracle after every round.

Simulated annotators act like people: each gets a token, leases tasks at ``/api/v1/tasks/next/``
and submits judgments, as a judge would give them (with ``noise``: the chance that it swaps two
neighbouring ranks). The judge is the rule oracle, or a reward model trained earlier (RLAIF-style:
a learned judge labels the data, and its mistakes are trained on). The loop itself is the
product's automatic rounds (``automation``): the first round is opened and automated through the
API, and each further round is opened by the automation when the one before it is through the
gate. The gate is the one people decide (``training.human_gate``): a candidate that passes the
reward model's check is judged by the same simulated annotators, side by side with the serving
policy, on held-out prompts, and their verdict promotes it or not.

Jobs (generation, training, gate, deployment) are done either by running workers (``--url`` of a
running server, e.g. ``make demo``) or, by default, in this process through the same services a
worker calls, so the command needs nothing else running. After each round the oracle compares the
serving policy with the one before and with round 0's on held-out questions (sampled answers at
temperature 1; ties count half) and counts right and rude answers, whichever judge labelled the
round; it also says how often the judge agreed with it (``judge_agreement``). The judges and
the oracle's measures are ``training.judges``.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from annotation.models import Round
from annotation.round_generation import round_generate
from feedback.models import Deployment, PolicyVersion
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role, role_grant
from feedback.serving import synthetic
from feedback.serving.backends import resolve_model_path
from feedback.serving.policies import deployment_run, policy_active

from .automation import automation_advance
from .execution import training_run_execute
from .gate import gate_evaluate
from .judges import (
    Judge,
    oracle_agreement,
    oracle_judgment,
    oracle_quality,
    oracle_win_rate,
    reward_judgment,
)
from .models import Automation, GateEvaluation, TrainingRun
from .trainers.common import reward_scorer

# Recipes that make the tiny model's loop learn, found by experiment on a 2-core CPU: full
# fine-tuning (LoRA adapters on a model this small barely move it), DPO with an SFT term on the
# chosen answers (plain DPO peaks and then collapses over rounds), short rounds.
# The loop's runs are evaluated on their held-out prompts once, at their last step, not ten
# times: the loop decides with the gate, and each evaluation of a run this short costs as much
# as several of its steps.
ONCE_AT_THE_END = 10_000
TINY_POLICY_RECIPE: dict[str, Any] = {
    "use_lora": False, "learning_rate": 1e-3, "beta": 0.1, "sft_weight": 1.0,
    "per_device_train_batch_size": 32, "num_train_epochs": 2.0, "max_length": 128,
    "eval_every": ONCE_AT_THE_END,
}  # fmt: skip
TINY_REWARD_RECIPE: dict[str, Any] = {
    "use_lora": False, "learning_rate": 1e-3, "num_train_epochs": 2.0,
    "per_device_train_batch_size": 16, "max_length": 128, "eval_every": ONCE_AT_THE_END,
}  # fmt: skip

JUDGES = ("oracle", "reward")
# How many times a request answered 429 is sent again after the wait the server asks for.
MAX_THROTTLED = 5
# Held-out prompts the simulated annotators compare each candidate on (the human gate): 128
# judgments tell a win rate of 0.61 from 0.5 (the lower end of its 95% interval is 0.52).
HUMAN_GATE_PROMPTS = 128
# The reward model's gate before people: a first filter. Its win rate on 32 prompts x 4 samples
# has a standard error near 0.045, so 0.45 turns back a candidate it finds clearly worse and
# leaves a close call to people (at 0.5 it turned back one at 0.469 that people never saw).
FIRST_FILTER = 0.45
# Prompts a round. More distinct questions is what made later rounds learn (docs/benchmarks.md,
# "The loop"): over five seeds, every candidate promoted, 32 a round ended at 0.70-0.73 against
# round 0 and 64 at 0.74-0.78; with the human gate, 64 left one seed's round 2 at 0.69 and its
# round 3 turned back, and 80 met 0.70 on ten seeds of ten (0.73 to 0.81). Three rounds of 80
# and the gate's 128 use every question the synthetic task has besides the held-out ones.
PROMPTS_PER_ROUND = 80
# Disagreement needs per-axis reward models, which the loop does not train.
SELECTIONS = ("random", "uncertainty")


class SimulationError(ValueError):
    """``simulate`` cannot start with these arguments; raised before anything is written."""


def judge_load(*, judge: str, reward_run_id: int | None, noise: float) -> tuple[str, Judge]:
    """The judge's name for the report (``oracle``, ``reward:ID``) and the judge itself; a
    reward run must be a succeeded reward-model run. Its model is loaded here, once."""
    if judge not in JUDGES:
        raise SimulationError(f"Unknown judge {judge!r}; one of: {', '.join(JUDGES)}.")
    if judge == "oracle":
        if reward_run_id is not None:
            raise SimulationError("A reward run is only for the reward judge, not the oracle.")
        return "oracle", lambda task, rng: oracle_judgment(
            task["prompt"]["messages"][-1]["content"], task["completions"], noise, rng
        )
    if reward_run_id is None:
        raise SimulationError("The reward judge needs a reward run: a succeeded reward-model run.")
    run = TrainingRun.objects.select_related("base_policy").filter(pk=reward_run_id).first()
    if run is None:
        raise SimulationError(f"Training run {reward_run_id} does not exist.")
    if run.kind != TrainingRun.Kind.REWARD:
        raise SimulationError(f"Training run {run.pk} is a {run.kind} run, not a reward model.")
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SimulationError(f"Reward run {run.pk} is {run.status}, not succeeded.")
    score = reward_scorer(
        Path(settings.ARTIFACTS_DIR) / run.artifact_path / "model",
        resolve_model_path(run.base_policy.base_model),
    )

    def by_reward(task: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        # Role and content only: the chat template should see what the reward model trained on.
        prompt = [{"role": m["role"], "content": m["content"]} for m in task["prompt"]["messages"]]
        return reward_judgment(
            prompt=prompt, completions=task["completions"], rubric=task["rubric"],
            score=score, noise=noise, rng=rng,
        )  # fmt: skip

    return f"reward:{run.pk}", by_reward


class ApiClient:
    """JSON over the REST API as one user: in this process (Django's test client, the same URL
    routing, views and middleware as a server) or over HTTP to a running server."""

    def __init__(self, token: str, url: str | None = None) -> None:
        self.url = url
        if url:
            import httpx

            self.http = httpx.Client(
                base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60
            )
        else:
            from django.test import Client

            self.client = Client(HTTP_AUTHORIZATION=f"Token {token}", SERVER_NAME="localhost")

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """One request; answered 429 (a person's lease rate, ``THROTTLE_LEASE``, which a
        simulated annotator judging a round and then a gate's round can reach), it waits the
        Retry-After the server asks for and sends it again, as a well-behaved client does."""
        for _ in range(MAX_THROTTLED):
            status, text, retry_after = self._send(method, path, body, **kw)
            if status != 429:
                break
            time.sleep(float(retry_after or 1))  # the server's own word on when to come back
        data = json.loads(text) if text else None
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {data}")
        return status, data

    def _send(
        self, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, str, str | None]:
        if self.url:
            response = self.http.request(method, path, json=body, **kw)
            return response.status_code, response.text, response.headers.get("Retry-After")
        send = getattr(self.client, method.lower())
        if "content" in kw:
            response = send(path, kw["content"], content_type=kw["headers"]["Content-Type"])
        elif body is None:  # no body, as an HTTP client sends it (not an empty form)
            response = send(path, content_type="application/json")
        else:
            response = send(path, json.dumps(body), content_type="application/json")
        return response.status_code, response.content.decode(), response.get("Retry-After")


def _user_with_token(name: str, role: Role) -> str:
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username=name)
    role_grant(user=user, role=role)
    return Token.objects.get_or_create(user=user)[0].key


def jobs_run_here() -> None:
    """Do, in this process, the jobs a worker would take from the queues (the same services)."""
    for round_ in Round.objects.filter(status=Round.Status.GENERATING):
        round_generate(round_id=round_.pk)
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED):
        training_run_execute(run_id=run.pk)
    for gate in GateEvaluation.objects.filter(status=GateEvaluation.Status.PENDING):
        gate_evaluate(gate_id=gate.pk)
    for deployment in Deployment.objects.filter(status=Deployment.Status.PENDING):
        deployment_run(deployment_id=deployment.pk)


def _stage_seconds(history: list[dict[str, str]]) -> dict[str, float]:
    """Seconds spent in each stage, from the times the automation recorded."""
    times = [(e["stage"], datetime.fromisoformat(e["at"])) for e in history]
    return {
        stage: round((later - at).total_seconds(), 2)
        for (stage, at), (_, later) in itertools.pairwise(times)
    }


def _run_seconds(run: TrainingRun | None) -> float:
    if run is None or run.started_at is None or run.finished_at is None:
        return 0.0
    return (run.finished_at - run.started_at).total_seconds()


# Over 60 lines only by its signature: 19 options (the command's), a body of about 50 lines.
def simulate(
    *,
    rounds: int = 3,
    prompts_per_round: int = PROMPTS_PER_ROUND,
    k: int = 4,
    annotators: int = 1,
    noise: float = 0.0,
    judge: str = "oracle",
    judge_reward_run: int | None = None,
    eval_prompts: int = 48,
    seed: int = 0,
    policy_recipe: dict[str, Any] | None = None,
    reward_recipe: dict[str, Any] | None = None,
    gate_threshold: float | None = None,
    human_gate: int = HUMAN_GATE_PROMPTS,
    human_gate_threshold: float = 0.5,
    selection: str = "random",
    pool: int | None = None,
    url: str | None = None,
    timeout_s: float = 3600,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run ``rounds`` automatic rounds with ``annotators`` simulated annotators; one row each.

    ``judge`` is who the annotators ask: ``oracle`` (the rule oracle) or ``reward`` (the reward
    model of the succeeded reward run ``judge_reward_run``); the oracle measures either way.
    ``selection`` is how rounds after the first choose their prompts (the first has no reward
    model yet): uncertainty scores ``pool`` unused prompts (default twice ``prompts_per_round``)
    with the reward model the round before trained and keeps the least certain.
    ``human_gate``: held-out prompts on which the simulated annotators (the same judge) compare
    each candidate that passes the reward model's gate with the serving policy, side by side;
    the candidate is promoted when the lower end of their win rate's 95% interval is at least
    ``human_gate_threshold`` (``training.human_gate``). 0: the reward model's gate alone.
    ``gate_threshold``: the reward model's win rate a candidate needs; by default 0.5 alone, and
    ``FIRST_FILTER`` before people, where it only spares them a candidate clearly worse.
    """
    if gate_threshold is None:
        gate_threshold = FIRST_FILTER if human_gate else 0.5
    if selection not in SELECTIONS:
        raise SimulationError(f"Unknown selection {selection!r}; one of: {', '.join(SELECTIONS)}.")
    pool = (pool or 2 * prompts_per_round) if selection != "random" else None
    from tqdm import tqdm

    judge_name, judge_fn = judge_load(judge=judge, reward_run_id=judge_reward_run, noise=noise)
    rng = random.Random(seed)
    round0 = policy_active()
    if round0 is None:
        raise DomainError(
            "No policy is active: run `manage.py build_tiny_model` first (it registers the tiny "
            "model and makes it active)."
        )
    held_out, questions = _questions(
        rounds=rounds, prompts_per_round=prompts_per_round, eval_prompts=eval_prompts, seed=seed,
        extra=max(0, (pool or 0) - prompts_per_round) + human_gate,
    )  # fmt: skip
    loop = _Loop(
        admin=ApiClient(_user_with_token("simulated-admin", Role.ADMIN), url),
        people=[
            ApiClient(_user_with_token(f"simulated-annotator-{i + 1}", Role.ANNOTATOR), url)
            for i in range(annotators)
        ],
        judge_name=judge_name, judge=judge_fn, rng=rng, round0=round0, held_out=held_out,
        url=url, timeout_s=timeout_s,
    )  # fmt: skip
    round_id = loop.start(
        questions, rounds=rounds, prompts_per_round=prompts_per_round, k=k, seed=seed,
        automation={
            "next_selection": selection, **({"next_pool": pool} if pool else {}),
            "gate_threshold": gate_threshold,
            "human_gate_prompts": human_gate, "human_gate_threshold": human_gate_threshold,
            "policy_recipe": {**TINY_POLICY_RECIPE, **(policy_recipe or {})},
            "reward_recipe": {**TINY_REWARD_RECIPE, **(reward_recipe or {})},
        },
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    previous = round0
    bar = tqdm(total=rounds, desc="rounds", unit="round", disable=not progress, file=sys.stderr)
    for number in range(1, rounds + 1):
        row, serving, next_round = loop.round_run(
            number, round_id=round_id, previous=previous, bar=bar
        )
        results.append(row)
        report(row)
        bar.update(1)
        previous = serving
        round_id = next_round or round_id
    bar.close()
    return results


def _questions(
    *, rounds: int, prompts_per_round: int, eval_prompts: int, seed: int, extra: int = 0
) -> tuple[list[str], list[str]]:
    """The held-out questions the oracle measures on, and the ones the rounds are made of
    (``extra`` more, so that a selecting round has a pool larger than what it keeps)."""
    held_out = synthetic.prompts(eval_prompts, seed=seed + 10_000)
    wanted = rounds * prompts_per_round + extra
    drawn = synthetic.prompts(
        min(synthetic.DISTINCT_QUESTIONS, wanted + eval_prompts), seed=seed + 1
    )
    pool = [q for q in drawn if q not in held_out][:wanted]
    if len(pool) < wanted:
        raise SimulationError(f"The synthetic task has {len(pool)} questions besides the "
                              f"held-out ones, not {wanted}: fewer rounds or prompts per "
                              "round.")  # fmt: skip
    return held_out, pool


@dataclass
class _Loop:
    """One simulation's people (an admin and the annotators, each a client of the API), its
    judge, and what the oracle measures on; ``url`` None does the jobs in this process."""

    admin: ApiClient
    people: list[ApiClient]
    judge_name: str
    judge: Judge
    rng: random.Random
    round0: PolicyVersion
    held_out: list[str]
    url: str | None
    timeout_s: float

    def start(
        self,
        pool: list[str],
        *,
        rounds: int,
        prompts_per_round: int,
        k: int,
        seed: int,
        automation: dict[str, Any],
    ) -> int:
        """As an admin would: import the questions, open the first round, automate it (the
        automation opens each further round). Returns the first round's id."""
        tag = f"simulate-{seed}-{secrets.token_hex(3)}"
        lines = "\n".join(json.dumps({"prompt": q, "tags": [tag]}) for q in pool)
        self.admin.call("POST", "/api/v1/prompts/import/", content=lines.encode(),
                        headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        _, opened = self.admin.call("POST", "/api/v1/rounds/", {
            "source": "policy", "k": k, "overlap": 1, "tags": [tag], "limit": prompts_per_round,
            "temperature": 1.0, "max_new_tokens": 48, "seed": seed,
        })  # fmt: skip
        round_id = opened["round"]["id"]
        self.admin.call("POST", f"/api/v1/rounds/{round_id}/automation/", {
            "rounds_left": rounds - 1, "prompt_tags": [tag],
            "gate_threshold": automation["gate_threshold"], "gate_prompts": 32,
            "human_gate_prompts": automation["human_gate_prompts"],
            "human_gate_threshold": automation["human_gate_threshold"],
            **{key: value for key, value in automation.items() if key.startswith("next_")},
            "policy_recipe": automation["policy_recipe"],
            "reward_recipe": automation["reward_recipe"],
        })  # fmt: skip
        return round_id

    def wait(
        self, path: str, done: Callable[[Any], bool], *, round_id: int,
        work: Callable[[], Any] = lambda: None,
    ) -> Any:  # fmt: skip
        """GET ``path`` until ``done`` says so; in-process, each pass first does the jobs. Each
        pass the annotators also do ``work`` (judge a gate's side-by-side round, if one is open)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            if not self.url:
                jobs_run_here()
            work()
            if not self.url and "automation" in path:
                automation_advance(automation_id=Automation.objects.get(round_id=round_id).pk)
            _, body = self.admin.call("GET", path)
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting on {path}: {body}")
            time.sleep(0.5 if self.url else 0)  # polling a server; in-process, each pass works

    def round_run(
        self, number: int, *, round_id: int, previous: PolicyVersion, bar: Any
    ) -> tuple[dict[str, Any], PolicyVersion, int | None]:
        """One round: its generation, its annotation, then train → gate → deploy; measured.
        Returns the round's row, the policy serving after it, and the next round's id."""
        started = time.perf_counter()
        bar.set_postfix_str("generating")
        generated = self.wait(
            f"/api/v1/rounds/{round_id}/",
            lambda body: body["status"] != "generating",
            round_id=round_id,
        )
        bar.set_postfix_str("annotating")
        mark = time.perf_counter()
        generate_s = mark - started  # in-process: the round's generation itself
        judgments, agreement = _annotate_round(self.people, self.judge, self.rng)
        annotate_s = time.perf_counter() - mark
        bar.set_postfix_str("training")
        gate_judgments = [0]

        def judge_the_gate() -> None:
            # The round is closed by now: what they are given is a gate's side-by-side round.
            gate_judgments[0] += _annotate_round(self.people, self.judge, self.rng)[0]

        automation = self.wait(
            f"/api/v1/rounds/{round_id}/automation/",
            lambda body: body["stage"] in ("done", "failed", "stopped"),
            round_id=round_id, work=judge_the_gate,
        )  # fmt: skip
        if automation["stage"] != "done":
            raise RuntimeError(f"round {number}: {automation['stage']}: {automation['error']}")
        serving = policy_active()
        row = {"round": number, "policy": serving.name, "judgments": judgments,
               "judge": self.judge_name, "judge_agreement": agreement,
               "selection": generated["selection"], "pool": generated["pool_size"],
               "gate_judgments": gate_judgments[0]}  # fmt: skip
        row.update(self.measure(automation["id"], serving=serving, previous=previous))
        row["seconds"] = {
            "generate": round(generate_s, 2),
            "annotate": round(annotate_s, 2),
            **row["seconds"],
            "total": round(time.perf_counter() - started, 2),
        }
        return row, serving, automation["next_round"]

    def measure(
        self, automation_id: int, *, serving: PolicyVersion, previous: PolicyVersion
    ) -> dict[str, Any]:
        """What the round's automation recorded, and the oracle's view of the serving policy
        against the one before and round 0's, with the seconds each stage took."""
        done = Automation.objects.select_related(
            "reward_run", "policy_run", "gate", "snapshot"
        ).get(pk=automation_id)
        mark = time.perf_counter()
        row = {
            "pairs": sum(done.snapshot.manifest["rows"].values()),
            "reward_accuracy": done.reward_run.metrics.get("eval_accuracy"),
            "gate": {
                "status": done.gate.status,
                "win_rate": done.gate.win_rate,
                "human_win_rate": done.gate.human_win_rate,
                "human_lower_bound": done.gate.human_lower_bound,
                "failed_on": done.gate.metrics.get("failed_on", []),
            },
            "win_rate_vs_previous": oracle_win_rate(serving, previous, self.held_out),
            "win_rate_vs_round0": oracle_win_rate(serving, self.round0, self.held_out),
            **oracle_quality(serving, self.held_out),
        }
        row["seconds"] = {
            **_stage_seconds(done.history),
            # The trainers' own time, inside the reward and policy stages.
            "train": round(_run_seconds(done.reward_run) + _run_seconds(done.policy_run), 2),
            "measure": round(time.perf_counter() - mark, 2),
        }
        return row


def _annotate_round(
    people: list[ApiClient], judge: Judge, rng: random.Random
) -> tuple[int, float | None]:
    """Annotators take turns, one task each, until no one is given a task. Returns the number of
    judgments, and the share of their pairs on which the judge agreed with the oracle (see
    ``oracle_agreement``; None when the oracle ranked no pair apart)."""
    done = 0
    agreed, pairs = 0.0, 0
    waiting = list(people)
    while waiting:
        for person in list(waiting):
            status, task = person.call("POST", "/api/v1/tasks/next/")
            if status == 204 or not task:
                waiting.remove(person)
                continue
            body = judge(task, rng)
            person.call("POST", f"/api/v1/assignments/{task['assignment']}/submit/", body)
            done += 1
            task_agreed, task_pairs = oracle_agreement(
                question=task["prompt"]["messages"][-1]["content"],
                texts={c["id"]: c["text"] for c in task["completions"]},
                ranking=body["ranking"],
            )
            agreed, pairs = agreed + task_agreed, pairs + task_pairs
    return done, round(agreed / pairs, 4) if pairs else None
