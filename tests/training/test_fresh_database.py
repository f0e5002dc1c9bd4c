"""Every command on a fresh database, before `build_tiny_model`: it does its work or says what to
run instead, never a traceback (issue 18: `simulate` died with PolicyVersion.DoesNotExist)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from feedback.models import PolicyVersion

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["simulate", "--rounds", "1"], "run `manage.py build_tiny_model` first"),
        (["open_round", "--k", "3"], "manage.py import_prompts FILE.jsonl"),
        (["register_model", "no-such-org/no-such-model"], "not in the local Hugging Face cache"),
    ],
)
def test_a_command_before_any_model_says_what_to_run(command, says, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert not PolicyVersion.objects.exists()
    with pytest.raises(CommandError) as refused:
        call_command(*command, stdout=StringIO(), stderr=StringIO())
    assert says in str(refused.value)


def test_an_export_before_any_judgment_writes_an_empty_file(tmp_path):
    out = tmp_path / "pairs.jsonl"
    stdout = StringIO()
    call_command("export_preferences", "--format", "trl", "--output", str(out), stdout=stdout)
    assert out.read_text() == "" and "0 pairs" in stdout.getvalue()
