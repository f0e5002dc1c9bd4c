"""Reading the admin pages' forms: small helpers for posted numbers and JSON, and the gate form."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import HttpRequest

from feedback.platform.errors import DomainError


def posted_int(value: str | None, default: int) -> int:
    """An integer field: ``default`` when empty, -1 (out of every range) when not a number."""
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        return -1


def posted_json_object(request: HttpRequest, name: str) -> dict[str, Any]:
    """A textarea of JSON that must hold an object; empty means {}."""
    text = request.POST.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DomainError(f"{name}: not JSON ({exc.msg}).", fields={name: [exc.msg]}) from None
    if not isinstance(value, dict):
        raise DomainError(f"{name}: must be a JSON object.", fields={name: ["Not an object."]})
    return value


class GateForm(forms.Form):
    """What ``training.gate.gate_request`` takes, with the API's limits and defaults."""

    reward_run = forms.IntegerField(required=False, min_value=1)
    prompts = forms.IntegerField(min_value=1, max_value=2000, initial=32)
    threshold = forms.FloatField(min_value=0, max_value=1, initial=0.55)
    max_kl_drift = forms.FloatField(min_value=0, required=False)
    human_prompts = forms.IntegerField(min_value=0, max_value=2000, initial=0, required=False)
    human_threshold = forms.FloatField(min_value=0, max_value=1, initial=0.5, required=False)

    def problems(self) -> str:
        """The errors as one line for a message: "threshold: Ensure this value is …"."""
        return "; ".join(
            f"{name.replace('_', ' ')}: {' '.join(errors)}" for name, errors in self.errors.items()
        )
