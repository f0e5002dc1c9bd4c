"""Active learning: a policy round opened through the API chooses, from a pool of prompts, those
a trained reward model is least sure about (the smallest gap between its two best candidates),
or those the per-axis reward models disagree on most; the round records what chose them and
why; bad combinations are 400s naming the field; ``simulate --selection uncertainty`` has the
automation choose each next round's prompts with the reward model it just trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from annotation.models import Round, TaskCompletion
from annotation.round_generation import round_generate
from annotation.round_selection import ordering_disagreement, top_gap
from feedback.models import Completion
from feedback.serving.backends import resolve_model_path
from training.execution import training_run_execute
from training.models import Automation, TrainingRun
from training.trainers.common import reward_scorer

from ..annotation.test_round_generation import synthetic_prompts
from .test_reward_runs import FAST, URL, judged_round

pytestmark = pytest.mark.django_db
ROUNDS = "/api/v1/rounds/"
POLICY_ROUND = {"source": "policy", "k": 3, "overlap": 1, "tags": ["synthetic"],
                "max_new_tokens": 32, "seed": 7}  # fmt: skip


def reward_run(client, number: int, **recipe) -> TrainingRun:
    response = client.post(
        URL, {"kind": "reward", "rounds": [number], "recipe": {**FAST, "max_steps": 2, **recipe}},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.content
    run = training_run_execute(run_id=response.json()["id"])
    assert run.status == "succeeded", run.error
    return run


def candidates(round_: Round, prompt_id: int) -> list[Completion]:
    """What a task of the round would compare: the policy's first K distinct, non-empty texts."""
    seen, chosen = set(), []
    for c in Completion.objects.filter(
        prompt_id=prompt_id, policy_version=round_.policy_version
    ).order_by("sample_index"):
        if c.text.strip() and c.text.strip() not in seen:
            seen.add(c.text.strip())
            chosen.append(c)
    return chosen[: round_.k]


def scores_by(run: TrainingRun, round_: Round, prompt_id: int) -> list[float]:
    """The run's scores of the prompt's candidates, computed here, apart from the job."""
    score = reward_scorer(
        Path(settings.ARTIFACTS_DIR) / run.artifact_path / "model",
        resolve_model_path(run.base_policy.base_model),
    )
    messages = [{"role": m["role"], "content": m["content"]}
                for m in candidates(round_, prompt_id)[0].prompt.messages]  # fmt: skip
    return [score(messages, c.text) for c in candidates(round_, prompt_id)]


def test_an_uncertainty_round_keeps_the_prompts_whose_best_pair_is_closest(
    api, admin, annotator, tiny_policy
):
    client = api(admin)
    run = reward_run(client, judged_round(api, annotator, n=12, seed=8))
    synthetic_prompts(12, seed=21)
    response = client.post(ROUNDS, {**POLICY_ROUND, "selection": "uncertainty",
                                    "selection_run": run.pk, "pool": 10, "limit": 4},
                           format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    opened = response.json()["round"]
    assert (opened["selection"], opened["selection_run"], opened["pool_size"]) == (
        "uncertainty", run.pk, 10,
    )  # fmt: skip
    round_ = round_generate(round_id=opened["id"])
    assert round_.status == "open", round_.generation_error

    detail = round_.selection_detail
    pool = [int(pid) for pid in detail["scores"]]
    assert len(pool) + detail["left_out"] == 10
    gaps = {pid: top_gap(scores_by(run, round_, pid)) for pid in pool}
    for pid, gap in gaps.items():
        assert detail["scores"][str(pid)] == pytest.approx(gap, abs=1e-4)
    closest = sorted(pool, key=lambda pid: (gaps[pid], pid))[:4]
    assert detail["kept"] == closest == round_.prompt_ids
    # Only the kept prompts became tasks, each comparing the very candidates that were scored.
    assert sorted(round_.tasks.values_list("prompt_id", flat=True)) == sorted(closest)
    for task in round_.tasks.all():
        shown = set(TaskCompletion.objects.filter(task=task).values_list("completion", flat=True))
        assert shown == {c.pk for c in candidates(round_, task.prompt_id)}
    # Generating again adds nothing and chooses nothing anew.
    round_generate(round_id=round_.pk)
    assert round_.tasks.count() == 4
    body = client.get(f"{ROUNDS}{round_.pk}/").json()
    assert body["selection_detail"]["kept"] == closest and body["pool_size"] == 10
    # Without selection_run, uncertainty takes the newest reward model trained on rankings.
    again = client.post(ROUNDS, {**POLICY_ROUND, "selection": "uncertainty", "limit": 2},
                        format="json")  # fmt: skip
    assert again.status_code == 202 and again.json()["round"]["selection_run"] == run.pk


def test_a_disagreement_round_keeps_the_prompts_the_axis_models_order_most_differently(
    api, admin, annotator, tiny_policy
):
    client = api(admin)
    number = judged_round(api, annotator, n=12, seed=8)
    runs = {axis: reward_run(client, number, axis=axis) for axis in ("helpful", "harmless")}
    synthetic_prompts(10, seed=22)
    response = client.post(ROUNDS, {**POLICY_ROUND, "selection": "disagreement", "limit": 3},
                           format="json")  # fmt: skip
    assert response.status_code == 202, response.content
    round_ = round_generate(round_id=response.json()["round"]["id"])
    assert round_.status == "open", round_.generation_error
    detail = round_.selection_detail
    assert detail["runs"] == {axis: run.pk for axis, run in runs.items()}
    assert round_.selection_run is None and round_.pool_size == 10
    pool = [int(pid) for pid in detail["scores"]]
    spread = {
        pid: ordering_disagreement([scores_by(runs[a], round_, pid) for a in sorted(runs)])
        for pid in pool
    }
    most = sorted(pool, key=lambda pid: (-spread[pid], pid))[:3]
    assert detail["kept"] == most
    assert sorted(round_.tasks.values_list("prompt_id", flat=True)) == sorted(most)


def test_the_open_round_form_chooses_by_uncertainty_and_the_round_page_shows_why(
    api, admin, annotator, tiny_policy, client
):
    run = reward_run(api(admin), judged_round(api, annotator, n=12, seed=8))
    synthetic_prompts(8, seed=24)
    client.force_login(admin)
    form = {"source": "policy", "k": 3, "overlap": 1, "tags": "synthetic", "limit": 3,
            "selection": "uncertainty", "selection_run": run.pk, "pool": 6}  # fmt: skip
    response = client.post("/manage/rounds/open/", form)
    round_ = Round.objects.get(source="policy")
    assert response.status_code == 302 and response.url == f"/manage/rounds/{round_.pk}/"
    assert (round_.selection, round_.selection_run, round_.pool_size) == ("uncertainty", run.pk, 6)
    round_ = round_generate(round_id=round_.pk)
    page = client.get(f"/manage/rounds/{round_.pk}/").content.decode()
    assert "Prompts chosen by uncertainty" in page and f"run {run.pk}</a>" in page
    for pid in round_.selection_detail["kept"]:
        measure = round_.selection_detail["scores"][str(pid)]
        assert f"<td>{pid}</td><td>{measure:.4f}</td>" in page
    # An imported round cannot be chosen by a reward model: the form says so, nothing opens.
    response = client.post("/manage/rounds/open/", {**form, "source": "imported"}, follow=True)
    assert "need the policy to generate" in response.content.decode()
    assert Round.objects.count() == 2  # the judged round and the one above


def test_the_measures():
    assert top_gap([0.1, 0.9, 0.5]) == pytest.approx(0.4)
    assert ordering_disagreement([[1, 2, 3], [1, 2, 3]]) == 0
    assert ordering_disagreement([[1, 2, 3], [3, 2, 1]]) == 1
    # Three models: the third reverses one candidate pair of three against each of the others;
    # of the three pairs of models, two disagree on a third of the candidate pairs.
    assert ordering_disagreement([[1, 2, 3], [1, 2, 3], [2, 1, 3]]) == pytest.approx(2 / 9)
    assert ordering_disagreement([[1, 1, 3], [1, 2, 3]]) == pytest.approx(1 / 6)  # a tie: half


def test_bad_combinations_are_400s_naming_the_field(api, admin, annotator, tiny_policy):
    client = api(admin)
    synthetic_prompts(4, seed=23)

    def field_of(body: dict) -> list[str]:
        response = client.post(ROUNDS, {**POLICY_ROUND, **body}, format="json")
        assert response.status_code == 400, response.content
        return list(response.json()["fields"])

    # No reward model yet.
    assert field_of({"selection": "uncertainty", "limit": 2}) == ["selection_run"]
    assert field_of({"selection": "uncertainty", "limit": 2, "selection_run": 999}) == [
        "selection_run"
    ]
    assert field_of({"selection": "disagreement", "limit": 2}) == ["selection_run"]
    assert field_of({"selection": "sharpest", "limit": 2}) == ["selection"]
    assert field_of({"selection": "uncertainty"}) == ["limit"]
    assert field_of({"pool": 3, "limit": 2}) == ["pool"]
    assert field_of({"selection_run": 1, "limit": 2}) == ["selection_run"]
    assert field_of({"source": "imported", "selection": "uncertainty"}) == ["selection"]
    assert field_of({"source": "imported", "pool": 3}) == ["pool"]
    run = reward_run(client, judged_round(api, annotator, n=12, seed=8), axis="helpful")
    # A per-axis model may judge uncertainty; one axis is not enough for disagreement.
    assert field_of({"selection": "disagreement", "limit": 2}) == ["selection_run"]
    assert field_of({"selection": "disagreement", "limit": 2, "selection_run": run.pk}) == [
        "selection_run"
    ]
    queued = client.post(URL, {"kind": "reward", "recipe": FAST}, format="json").json()
    assert field_of({"selection": "uncertainty", "limit": 2, "selection_run": queued["id"]}) == [
        "selection_run"
    ]
    assert not Round.objects.filter(source="policy").exists()


def test_simulate_chooses_later_rounds_by_the_previous_reward_model(tiny_policy, capsys):
    call_command(
        "simulate", "--rounds", "2", "--prompts", "6", "--k", "3", "--eval-prompts", "4",
        "--selection", "uncertainty", "--pool", "10", "--recipe", '{"max_steps": 4}',
        "--reward-recipe", '{"max_steps": 4}', "--gate-threshold", "0", "--human-gate", "0",
    )  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["selection"], row["pool"]) for row in rows] == [
        ("random", None), ("uncertainty", 10),
    ]  # fmt: skip
    first, second = Round.objects.order_by("number")
    automation = Automation.objects.get(round=first)
    assert automation.next_selection == "uncertainty" and automation.next_pool == 10
    assert second.selection_run == automation.reward_run_id
    assert second.tasks.count() == len(second.prompt_ids) == 6
    assert set(second.prompt_ids) <= {int(pid) for pid in second.selection_detail["scores"]}
