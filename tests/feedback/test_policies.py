"""Deploy and rollback: the switch waits for the backend to answer, is atomic, and the next
round's completions name the new version; a version that cannot answer never replaces the active
one."""

from __future__ import annotations

import pytest

from annotation.round_generation import round_generate
from annotation.rounds import round_open_for_policy
from feedback.models import Completion, Deployment, PolicyVersion
from feedback.serving.policies import deployment_run, policy_register

from ..annotation.test_round_generation import synthetic_prompts

pytestmark = pytest.mark.django_db


def deploy(api, admin, policy):
    response = api(admin).post(f"/api/v1/policies/{policy.pk}/deploy/")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"
    # The job the commit would enqueue, run here: the readiness check loads the new weights.
    return deployment_run(deployment_id=response.json()["id"])


def test_deploy_then_rollback_switch_the_active_version(api, admin, tiny_policy, tiny_model_path):
    v1 = policy_register(name="tiny-v1", base_model=tiny_model_path, parent=tiny_policy)
    assert v1.status == "candidate"
    deployment = deploy(api, admin, v1)
    assert deployment.status == "done" and deployment.previous == tiny_policy
    assert list(PolicyVersion.objects.filter(status="active")) == [v1]
    assert PolicyVersion.objects.get(pk=tiny_policy.pk).status == "retired"

    synthetic_prompts(3)
    round_ = round_generate(round_id=round_open_for_policy(k=2, overlap=1, tags=["synthetic"]).pk)
    assert round_.policy_version == v1
    assert set(
        Completion.objects.filter(tasks__round=round_).values_list(
            "policy_version__name", flat=True
        )
    ) == {"tiny-v1"}

    response = api(admin).post(f"/api/v1/policies/{v1.pk}/rollback/")
    assert response.status_code == 202
    assert response.json()["action"] == "rollback"
    deployment_run(deployment_id=response.json()["id"])
    assert list(PolicyVersion.objects.filter(status="active")) == [tiny_policy]
    detail = api(admin).get(f"/api/v1/deployments/{response.json()['id']}/").json()
    assert detail["status"] == "done" and detail["previous"] == "tiny-v1"


def test_a_version_that_cannot_answer_never_replaces_the_active_one(api, admin, tiny_policy):
    broken = policy_register(name="broken", base_model="models/does-not-exist")
    deployment = deploy(api, admin, broken)
    assert deployment.status == "failed" and "does-not-exist" in deployment.error
    assert list(PolicyVersion.objects.filter(status="active")) == [tiny_policy]
    assert PolicyVersion.objects.get(pk=broken.pk).status == "candidate"


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("active", "already_active"),
        ("external", "not_deployable"),
        ("rollback_first", "no_previous"),
    ],
)
def test_deploy_and_rollback_refusals_are_409s(api, admin, tiny_policy, case, code):
    if case == "active":
        response = api(admin).post(f"/api/v1/policies/{tiny_policy.pk}/deploy/")
    elif case == "external":
        external = PolicyVersion.objects.create(name="gpt-x", status="external")
        response = api(admin).post(f"/api/v1/policies/{external.pk}/deploy/")
    else:
        response = api(admin).post(f"/api/v1/policies/{tiny_policy.pk}/rollback/")
    assert response.status_code == 409
    assert response.json()["code"] == code
    assert Deployment.objects.count() == 0


def test_deploy_or_roll_back_a_missing_version_is_a_404(api, admin, tiny_policy):
    """A missing id is a 404, as everywhere else (issue 18: rollback answered 409)."""
    for action in ("deploy", "rollback"):
        response = api(admin).post(f"/api/v1/policies/{tiny_policy.pk + 999}/{action}/")
        assert response.status_code == 404, (action, response.content)
        assert response.json()["code"] == "not_found"
    candidate = PolicyVersion.objects.create(name="cand", status="candidate")
    refused = api(admin).post(f"/api/v1/policies/{candidate.pk}/rollback/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "Only the active version can be rolled back; cand is candidate."
    )
    assert Deployment.objects.count() == 0


def test_only_admins_deploy(api, researcher, annotator, tiny_policy):
    for user in (researcher, annotator):
        assert api(user).post(f"/api/v1/policies/{tiny_policy.pk}/deploy/").status_code == 403


def test_policy_list_shows_registry_information(api, researcher, tiny_policy):
    PolicyVersion.objects.create(name="Qwen1.5-14B-Chat-GPTQ-Int4", status="external")
    rows = {row["name"]: row for row in api(researcher).get("/api/v1/policies/").json()}
    qwen = rows["Qwen1.5-14B-Chat-GPTQ-Int4"]["registry"]
    assert qwen["parsed"]["family"] == "qwen" and qwen["parsed"]["quantization"] == "gptq-int4"
    assert qwen["memory"]["weights_gib"] == round(14e9 * 0.5 / 1024**3, 2)
