"""The demonstration routes a script would use: skip, edit the last one, preview; and the
round progress in an annotator's stats. Bad input names its field."""

from __future__ import annotations

import pytest

from annotation.models import Demonstration, Round

from ..factories import open_round

pytestmark = pytest.mark.django_db


def test_skip_edit_and_preview_through_the_api(api, annotator):
    round_ = open_round(n=2, k=3)
    client = api(annotator)
    first = client.get("/api/v1/demonstrations/next/").json()
    assert first["rubric"]["label"] == round_.rubric.label
    assert "<strong>" in first["rubric"]["guidelines_html"]

    blank = client.post(
        "/api/v1/demonstrations/skip/", {"prompt": first["prompt"], "reason": " "}, "json"
    )
    assert blank.status_code == 400
    assert blank.json()["fields"] == {"reason": ["Say why you skip this prompt."]}
    for _ in range(2):  # the same skip twice is one skip
        skipped = client.post(
            "/api/v1/demonstrations/skip/", {"prompt": first["prompt"], "reason": "unclear"}, "json"
        )
        assert skipped.status_code == 200, skipped.content
    second = client.get("/api/v1/demonstrations/next/").json()
    assert second["prompt"] != first["prompt"]

    saved = client.post(
        "/api/v1/demonstrations/", {"prompt": second["prompt"], "text": "Two."}, "json"
    ).json()
    last = client.get("/api/v1/demonstrations/mine/last/").json()
    assert (last["id"], last["text"], last["prompt"]) == (saved["id"], "Two.", second["prompt"])
    empty = client.put(f"/api/v1/demonstrations/{saved['id']}/", {"text": "  "}, "json")
    assert empty.status_code == 400 and list(empty.json()["fields"]) == ["text"]
    edited = client.put(f"/api/v1/demonstrations/{saved['id']}/", {"text": "2."}, "json")
    assert edited.status_code == 200, edited.content
    assert Demonstration.objects.get().text == "2."
    assert client.get("/api/v1/demonstrations/next/").status_code == 204

    Round.objects.update(status=Round.Status.CLOSED)
    assert client.get("/api/v1/demonstrations/mine/last/").status_code == 204
    closed = client.put(f"/api/v1/demonstrations/{saved['id']}/", {"text": "late"}, "json")
    assert closed.status_code == 404

    preview = client.post(
        "/api/v1/demonstrations/preview/", {"text": "**b** <script>x</script>"}, "json"
    )
    assert preview.json()["html"] == "<p><strong>b</strong> &lt;script&gt;x&lt;/script&gt;</p>\n"
    too_long = client.post("/api/v1/demonstrations/preview/", {"text": "x" * 20_001}, "json")
    assert too_long.status_code == 400 and list(too_long.json()["fields"]) == ["text"]


def test_stats_give_progress_through_a_round(api, annotator):
    open_round(n=3, k=3)
    client = api(annotator)
    lease = client.post("/api/v1/tasks/next/").json()
    client.post(f"/api/v1/assignments/{lease['assignment']}/skip/", {"reason": "unclear"}, "json")
    stats = client.get("/api/v1/me/stats/?round=1").json()
    assert stats["round"] == {"number": 1, "tasks": 3, "judged": 0, "skipped": 1}
    assert client.get("/api/v1/me/stats/?round=9").json()["round"] is None
    assert "round" not in client.get("/api/v1/me/stats/").json()
    bad = client.get("/api/v1/me/stats/?round=one")
    assert bad.status_code == 400 and list(bad.json()["fields"]) == ["round"]
    unknown = client.get("/api/v1/me/stats/?rounds=1")
    assert unknown.status_code == 400 and list(unknown.json()["fields"]) == ["rounds"]
