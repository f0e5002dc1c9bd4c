"""Factories for the records tests need, and a helper that opens a round the way an admin would."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from annotation.rounds import round_open_from_imported
from feedback.models import Completion, PolicyVersion, Prompt, messages_hash
from feedback.platform.roles import Role, role_grant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests")

    @factory.post_generation
    def role(obj: Any, create: bool, extracted: Role | None, **kwargs: Any) -> None:
        obj.save()
        if extracted:
            role_grant(user=obj, role=extracted)


class PolicyVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PolicyVersion

    name = factory.Sequence(lambda n: f"model-{n}")
    status = PolicyVersion.Status.EXTERNAL


def prompts_with_completions(n: int, k: int, *, tags: list[str] | None = None) -> list[Prompt]:
    """``n`` prompts with ``k`` distinct completions each, written in bulk."""
    policy, _ = PolicyVersion.objects.get_or_create(
        name="test-model", defaults={"status": PolicyVersion.Status.EXTERNAL}
    )
    start = Prompt.objects.count()
    prompts = []
    for i in range(start, start + n):
        messages = [{"role": "user", "content": f"What is {i} + {i}?"}]
        prompts.append(
            Prompt(messages=messages, content_hash=messages_hash(messages), tags=tags or [])
        )
    prompts = Prompt.objects.bulk_create(prompts, batch_size=1000)
    if any(p.pk is None for p in prompts):
        prompts = list(Prompt.objects.order_by("-id")[:n])[::-1]
    Completion.objects.bulk_create(
        [
            Completion(
                prompt=p, policy_version=policy, sample_index=j, text=f"Answer {j} to {p.pk}"
            )
            for p in prompts
            for j in range(k)
        ],
        batch_size=2000,
    )
    return prompts


def open_round(*, n: int = 5, k: int = 3, overlap: int = 1, seed: int = 1) -> Any:
    prompts_with_completions(n, k)
    round_, _ = round_open_from_imported(k=k, overlap=overlap, seed=seed)
    return round_
