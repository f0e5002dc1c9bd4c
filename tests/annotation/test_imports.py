"""Importing prompts by API and by command: line-numbered errors, all-or-nothing, --skip-invalid,
idempotent re-import."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from feedback.models import Completion, PolicyVersion, Prompt

pytestmark = pytest.mark.django_db

URL = "/api/v1/prompts/import/"

GOOD = [
    {
        "prompt": "What is 2+3?",
        "completions": [{"text": "5", "model": "m-a"}, {"text": "6", "model": "m-b"}],
    },
    {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "tags": ["chat"],
        "safety": False,
    },
    {"prompt": "How do I pick a lock?", "safety": True, "tags": ["safety"]},
]


def jsonl(rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(client, rows, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    file = SimpleUploadedFile("prompts.jsonl", jsonl(rows), content_type="application/x-ndjson")
    return client.post(f"{URL}?{query}", {"file": file}, format="multipart")


def test_admin_imports_prompts_and_completions(api, admin):
    response = upload(api(admin), GOOD)
    assert response.status_code == 201, response.content
    assert response.json() == {
        "lines": 3,
        "prompts_created": 3,
        "prompts_existing": 0,
        "completions_created": 2,
        "lines_skipped": 0,
        "errors": [],
        "errors_not_shown": 0,
    }
    chat = Prompt.objects.get(tags=["chat"])
    assert chat.messages[0] == {"role": "system", "content": "Be brief."}
    assert Prompt.objects.get(safety=True).messages == [
        {"role": "user", "content": "How do I pick a lock?"}
    ]
    assert set(PolicyVersion.objects.values_list("name", "status")) == {
        ("m-a", "external"),
        ("m-b", "external"),
    }
    assert Prompt.objects.get(tags=[]).source == "prompts.jsonl"


def test_reimporting_the_same_file_adds_nothing(api, admin):
    upload(api(admin), GOOD)
    response = upload(api(admin), GOOD)
    assert response.json()["prompts_created"] == 0
    assert response.json()["prompts_existing"] == 3
    assert response.json()["completions_created"] == 0
    assert (Prompt.objects.count(), Completion.objects.count()) == (3, 2)


def test_new_completions_for_a_known_prompt_are_appended(api, admin):
    upload(api(admin), GOOD)
    more = [{"prompt": "What is 2+3?", "completions": [{"text": "five", "model": "m-a"}]}]
    assert upload(api(admin), more).json()["completions_created"] == 1
    assert sorted(
        Completion.objects.filter(policy_version__name="m-a").values_list("sample_index", "text")
    ) == [(0, "5"), (1, "five")]


BAD_LINES = [
    ("{nope", "", "Not valid JSON: Expecting property name enclosed in double quotes at column 2."),
    ([1], "", "Must be a JSON object."),
    ({"prompt": ""}, "prompt", "Must be a non-empty string."),
    ({"prompt": "a", "messages": []}, "messages", "Give exactly one of 'messages' or 'prompt'."),
    (
        {"text": "a"},
        "text",
        "Unknown field; allowed: messages, prompt, completions, tags, safety, source.",
    ),
    (
        {"messages": [{"role": "bot", "content": "x"}]},
        "messages.0.role",
        "Must be one of: system, user, assistant.",
    ),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "messages",
        "The last message must be the user's turn to answer.",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "system", "content": "y"},
                {"role": "user", "content": "z"},
            ]
        },
        "messages.1.role",
        "A system message may only come first.",
    ),
    ({"prompt": "a\u0000b"}, "prompt", "Must not contain NUL characters."),
    ('{"prompt": "\\ud800"}', "prompt", "Must be valid Unicode (it holds a lone surrogate)."),
    (
        {"prompt": "a", "completions": [{"model": "m"}]},
        "completions.0",
        "Must be an object with 'text' and optionally 'model'.",
    ),
    ({"prompt": "a", "safety": "yes"}, "safety", "Must be true or false."),
    ({"prompt": "a", "tags": "x"}, "tags", "Must be a list of strings."),
    # A line's lists are refused by their length, with one message, before an entry is read.
    (
        {"messages": [{"role": "user", "content": "x"}] * 201},
        "messages",
        "At most 200 entries; got 201.",
    ),
    (
        {"prompt": "a", "completions": [{"text": "t"}] * 65},
        "completions",
        "At most 64 entries; got 65.",
    ),
    ({"prompt": "a", "tags": [1] * 1000}, "tags", "At most 50 entries; got 1000."),
]


@pytest.mark.parametrize(("line", "field", "message"), BAD_LINES)
def test_a_bad_line_is_reported_by_number_and_nothing_is_written(api, admin, line, field, message):
    response = upload(api(admin), [*GOOD, line])
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == [{"line": 4, "field": field, "message": message}]
    assert body["fields"] == {f"line 4{': ' + field if field else ''}": [message]}
    assert body["detail"].startswith("1 bad line(s); nothing was imported. First: line 4:")
    assert Prompt.objects.count() == 0 and PolicyVersion.objects.count() == 0


def test_skip_invalid_imports_the_good_lines_and_reports_the_bad(api, admin):
    response = upload(api(admin), [GOOD[0], "{nope", GOOD[1]], skip_invalid="true")
    assert response.status_code == 201
    body = response.json()
    assert body["prompts_created"] == 2 and body["lines_skipped"] == 1
    assert body["errors"][0]["line"] == 2


def test_a_report_names_twenty_bad_lines_and_counts_the_rest(api, admin):
    """A file of 1,000 bad lines is answered with twenty of them and the count of the others,
    whether it is refused or imported with skip_invalid."""
    rows = [GOOD[0], *({"prompt": ""} for _ in range(1000))]
    refused = upload(api(admin), rows)
    assert refused.status_code == 400
    body = refused.json()
    assert [e["line"] for e in body["errors"]] == list(range(2, 22))
    assert body["errors_not_shown"] == 980 and len(body["fields"]) == 20
    assert body["detail"].startswith("1000 bad line(s); nothing was imported. First: line 2:")
    assert Prompt.objects.count() == 0

    imported = upload(api(admin), rows, skip_invalid="true")
    assert imported.status_code == 201
    body = imported.json()
    assert (body["prompts_created"], body["lines"], body["lines_skipped"]) == (1, 1001, 1000)
    assert [e["line"] for e in body["errors"]] == list(range(2, 22))
    assert body["errors_not_shown"] == 980
    assert Prompt.objects.count() == 1


def test_raw_ndjson_body_works_too(api, admin):
    response = api(admin).post(URL, jsonl(GOOD), content_type="application/x-ndjson")
    assert response.status_code == 201
    assert response.json()["prompts_created"] == 3


def test_missing_file_is_a_field_error(api, admin):
    response = api(admin).post(URL, {}, format="multipart")
    assert response.status_code == 400
    assert response.json()["fields"] == {"file": ["No file was submitted."]}


@pytest.mark.parametrize("persona", ["annotator", "researcher", "outsider"])
def test_only_admins_import(api, persona, request):
    response = upload(api(request.getfixturevalue(persona)), GOOD)
    assert response.status_code == 403
    assert Prompt.objects.count() == 0


def test_import_command(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_bytes(jsonl([*GOOD, {"prompt": ""}]))
    with pytest.raises(CommandError, match="1 bad line"):
        call_command("import_prompts", str(path))
    assert "line 4 (prompt): Must be a non-empty string." in capsys.readouterr().err
    assert Prompt.objects.count() == 0
    call_command("import_prompts", str(path), "--skip-invalid")
    assert json.loads(capsys.readouterr().out)["prompts_created"] == 3
