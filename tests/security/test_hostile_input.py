"""Hostile input: property tests on the judgment validator and pair expansion, then the API fed
what a careless or malicious client sends (NUL bytes, lone surrogates, 10,000-level JSON, bodies
over the limit, NaN, strings for numbers, unknown and server-owned fields). Every answer is the
API's 4xx JSON error naming the field, never a 500, and nothing is stored.

Stored XSS (model output and annotators' text shown to others) is in test_stored_xss.py.
"""

from __future__ import annotations

import importlib
import io
import json
from itertools import combinations
from math import comb
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import exceptions

from annotation.judgments import ALLOWED_KEYS, TIME_SPENT_MAX_MS, body_sha256, judgment_validate
from annotation.models import Assignment, Demonstration, Judgment, Round, Rubric
from annotation.pairs import judgment_ranked_pairs
from feedback.models import PolicyVersion, Prompt
from feedback.platform.parsers import KEY_REASONS, NUL, SURROGATE, JSONParser, unstorable_strings

from ..annotation.helpers import lease, submit_url, valid_body
from ..factories import open_round

_default = importlib.import_module("annotation.migrations.0002_default_rubric")
# The default rubric as its migration writes it, unsaved: the validator only reads it.
RUBRIC = Rubric(
    name="3H", version=1, axes=_default.AXES, flags=_default.FLAGS,
    strength_labels=_default.STRENGTH, guidelines="",
)  # fmt: skip
AXES = RUBRIC.axis_keys
STRENGTHS = list(RUBRIC.strength_margins)
FAST = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------------------------------------
# Properties of the validator and the pair expansion (no database).


@st.composite
def rankings(draw: Any, ids: list[int]) -> list[list[int]]:
    """Any order of ``ids``, cut into tie groups at random places."""
    order = draw(st.permutations(ids))
    cuts = draw(st.lists(st.booleans(), min_size=len(ids) - 1, max_size=len(ids) - 1))
    groups, current = [], [order[0]]
    for cid, cut in zip(order[1:], cuts, strict=True):
        if cut:
            groups.append(current)
            current = []
        current.append(cid)
    return [*groups, current]


@st.composite
def valid_bodies(draw: Any) -> tuple[list[int], dict[str, Any]]:
    ids = draw(st.lists(st.integers(1, 10**9), min_size=2, max_size=7, unique=True))
    ranking = draw(rankings(ids))
    body: dict[str, Any] = {
        "ranking": ranking,
        "scores": {str(cid): {axis: draw(st.integers(1, 7)) for axis in AXES} for cid in ids},
        "time_spent_ms": draw(st.integers(0, TIME_SPENT_MAX_MS)),
        "flags": draw(st.lists(st.sampled_from(RUBRIC.flag_keys), unique=True)),
        "rationale": draw(st.text(max_size=50).filter(lambda text: "\x00" not in text)),
    }
    if len(ranking[0]) == 1:
        body["strength"] = draw(st.sampled_from(STRENGTHS))
    return ids, body


def validate(ids: list[int], body: object) -> tuple[dict[str, Any], dict[str, list[str]]]:
    clean, errors = judgment_validate(body=body, completion_ids=ids, rubric=RUBRIC)
    # Every error must be renderable as the API's JSON body, whatever the client sent.
    json.dumps(errors, ensure_ascii=False).encode("utf-8")
    assert all(
        isinstance(k, str) and v and all(isinstance(r, str) for r in v) for k, v in errors.items()
    )
    return clean, errors


@FAST
@given(valid_bodies())
def test_any_permutation_with_any_ties_is_accepted_and_canonical(case: Any) -> None:
    ids, body = case
    clean, errors = validate(ids, body)
    assert errors == {}
    assert clean["ranking"] == [sorted(group) for group in body["ranking"]]
    assert clean["flags"] == sorted(body["flags"])
    # Canonical: the order inside a tie and of flags does not change the stored body's hash.
    shuffled = {
        **body,
        "ranking": [group[::-1] for group in body["ranking"]],
        "flags": body["flags"][::-1],
    }
    assert body_sha256(validate(ids, shuffled)[0]) == body_sha256(clean)


@FAST
@given(valid_bodies())
def test_pairs_cover_every_cross_group_pair_once_with_consistent_margins(case: Any) -> None:
    ids, body = case
    clean, _ = validate(ids, body)
    ranking, scores = clean["ranking"], clean["scores"]
    margin = RUBRIC.strength_margins[clean["strength"]] if clean["strength"] else None
    pairs = judgment_ranked_pairs(RUBRIC, ranking, scores, clean["strength"])

    rank = {cid: g + 1 for g, group in enumerate(ranking) for cid in group}
    assert len(pairs) == comb(len(ids), 2) - sum(comb(len(group), 2) for group in ranking)
    expected = {frozenset(p) for p in combinations(ids, 2) if rank[p[0]] != rank[p[1]]}
    assert {frozenset((c, r)) for c, r, *_ in pairs} == expected  # each once, no ties
    mean = {cid: sum(s.values()) / len(s) for cid, s in ((int(k), v) for k, v in scores.items())}
    for chosen, rejected, chosen_rank, rejected_rank, pair_margin in pairs:
        assert (chosen_rank, rejected_rank) == (rank[chosen], rank[rejected])
        assert chosen_rank < rejected_rank  # the better one is always chosen
        assert 0.0 <= pair_margin <= 1.0
        if chosen_rank == 1 and rejected_rank == 2 and len(ranking[0]) == 1:
            assert pair_margin == margin
        else:
            gap = (mean[chosen] - mean[rejected]) / 6
            assert pair_margin == round(max(0.0, gap), 4)
    if len(ranking) == 1:
        assert pairs == []  # everything tied: nothing to learn


@st.composite
def broken_rankings(draw: Any) -> tuple[list[int], dict[str, Any]]:
    """A valid body whose ranking is no longer a partition of the task's completions."""
    ids, body = draw(valid_bodies())
    flat = [cid for group in body["ranking"] for cid in group]
    junk = st.one_of(
        st.text(max_size=5), st.floats(allow_nan=True), st.booleans(), st.none(),
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers()),
    )  # fmt: skip
    mutation = draw(st.sampled_from(["drop", "repeat", "unknown", "junk_id", "empty", "shape"]))
    ranking = [list(group) for group in body["ranking"]]
    if mutation == "drop":
        ranking = [[c for c in g if c != flat[-1]] for g in ranking]
        ranking = [g for g in ranking if g]
    elif mutation == "repeat":
        ranking.append([draw(st.sampled_from(flat))])
    elif mutation == "unknown":
        ranking[-1].append(draw(st.integers().filter(lambda c: c not in ids)))
    elif mutation == "junk_id":
        ranking[0][0] = draw(junk)
    elif mutation == "empty":
        ranking.insert(draw(st.integers(0, len(ranking))), [])
    else:
        ranking = draw(st.one_of(junk, st.just([]), st.lists(junk, min_size=1, max_size=3)))
    return ids, {**body, "ranking": ranking}


@FAST
@given(broken_rankings())
def test_a_ranking_that_is_not_a_permutation_is_rejected_by_name(case: Any) -> None:
    ids, body = case
    _, errors = validate(ids, body)
    assert any(path == "ranking" or path.startswith("ranking.") for path in errors), errors


BAD_SCORES = st.one_of(
    st.integers().filter(lambda v: not 1 <= v <= 7), st.floats(allow_nan=True),
    st.integers(1, 7).map(float), st.integers(1, 7).map(str), st.booleans(), st.none(),
    st.lists(st.integers(1, 7), max_size=2),
)  # fmt: skip


@FAST
@given(valid_bodies(), st.data())
def test_an_out_of_range_or_mistyped_score_names_its_completion_and_axis(
    case: Any, data: Any
) -> None:
    ids, body = case
    cid = data.draw(st.sampled_from(ids))
    axis = data.draw(st.sampled_from(AXES))
    body["scores"][str(cid)][axis] = data.draw(BAD_SCORES)
    _, errors = validate(ids, body)
    assert list(errors) == [f"scores.{cid}.{axis}"]
    assert errors[f"scores.{cid}.{axis}"][0].startswith("Must be an integer from 1 to 7")


# A wrong type for each top-level field; strings for numbers among them.
WRONG_TYPES = {
    "ranking": st.one_of(st.integers(), st.text(), st.dictionaries(st.text(), st.integers())),
    "scores": st.one_of(st.integers(), st.text(), st.lists(st.integers())),
    "strength": st.one_of(st.integers(), st.lists(st.text()), st.booleans()),
    "flags": st.one_of(st.text(min_size=1), st.integers(), st.dictionaries(st.text(), st.text())),
    "rationale": st.one_of(st.integers(), st.lists(st.text()), st.booleans(), st.floats()),
    "none_acceptable": st.one_of(
        st.integers(), st.sampled_from(["true", "false", ""]), st.none(), st.lists(st.booleans())
    ),
    "time_spent_ms": st.one_of(
        st.integers(0, 10**6).map(str), st.floats(), st.booleans(), st.none(),
        st.integers().filter(lambda v: not 0 <= v <= TIME_SPENT_MAX_MS),
    ),
}  # fmt: skip


@FAST
@given(valid_bodies(), st.sampled_from(sorted(WRONG_TYPES)), st.data())
def test_a_wrong_type_in_any_field_is_rejected_with_that_field_named(
    case: Any, field: str, data: Any
) -> None:
    ids, body = case
    body[field] = data.draw(WRONG_TYPES[field])
    _, errors = validate(ids, body)
    assert any(path == field or path.startswith(f"{field}.") for path in errors), (field, errors)


def test_ties_follow_the_rubric_rules() -> None:
    ids = [11, 12, 13]
    scores = {str(cid): dict.fromkeys(AXES, 4) for cid in ids}
    base = {"scores": scores, "time_spent_ms": 0}
    tied_top = {**base, "ranking": [[12, 11], [13]]}
    assert validate(ids, tied_top)[1] == {}  # no strength when the best are tied
    assert validate(ids, {**tied_top, "strength": "better"})[1] == {
        "strength": ["Must be empty when the best completions are tied."]
    }
    single_top = {**base, "ranking": [[11], [12, 13]]}
    assert list(validate(ids, single_top)[1]) == ["strength"]  # required: how much better
    clean, errors = validate(ids, {**single_top, "strength": "slightly_better"})
    assert errors == {} and clean["ranking"] == [[11], [12, 13]]
    pairs = judgment_ranked_pairs(RUBRIC, clean["ranking"], clean["scores"], "slightly_better")
    assert [(c, r, m) for c, r, _, _, m in pairs] == [(11, 12, 0.3333), (11, 13, 0.3333)]


# Any JSON a client could send, with every character JSON can escape, surrogates and NUL included.
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=8)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(st.dictionaries(st.sampled_from(ALLOWED_KEYS) | ANY_TEXT, JSON_VALUES) | JSON_VALUES)
def test_any_json_body_gives_errors_and_never_raises(body: Any) -> None:
    _, errors = validate([101, 102, 103], body)
    assert errors


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _unstorable(text: str) -> bool:
    return "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@FAST
@given(JSON_VALUES)
def test_the_parser_refuses_exactly_the_bodies_holding_unstorable_strings(value: Any) -> None:
    raw = json.dumps(value).encode("ascii")  # lone surrogates and NUL travel as \u escapes
    bad = any(_unstorable(s) for s in _strings(value))
    assert bool(unstorable_strings(value)) == bad
    try:
        parsed = JSONParser().parse(io.BytesIO(raw))
    except exceptions.ValidationError as error:
        assert bad
        json.dumps(error.detail, ensure_ascii=False).encode("utf-8")  # the paths are renderable
    else:
        assert not bad and parsed == value


# ---------------------------------------------------------------------------------------------
# The API, fed malformed and hostile bodies.

J = "application/json"
NDJSON = "application/x-ndjson"


@pytest.fixture
def world(api: Any, admin: Any, researcher: Any, annotator: Any) -> dict[str, Any]:
    """A round with a task the annotator holds, a policy, and a client for each persona."""
    round_ = open_round(n=2, k=3, overlap=1)
    annotator_client = api(annotator)
    task = lease(annotator_client)
    policy = PolicyVersion.objects.create(name="policy-x", status=PolicyVersion.Status.EXTERNAL)
    return {
        "clients": {
            "annotator": annotator_client,
            "admin": api(admin),
            "researcher": api(researcher),
            "anonymous": api(None),
        },
        "task": task,
        "ids": {
            "assignment": task["assignment"],
            "round": round_.pk,
            "task": task["task"],
            "policy": policy.pk,
        },
    }


def send(world: dict[str, Any], who: str, method: str, url: str, raw: bytes, ct: str = J) -> Any:
    client = world["clients"][who]
    return client.generic(method, url.format(**world["ids"]), raw, content_type=ct)


def error_of(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"code", "detail", "fields"}, body
    return body


# Every route that reads a JSON body, with who may call it.
JSON_ROUTES = [
    ("annotator", "POST", "/api/v1/assignments/{assignment}/submit/"),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/skip/"),
    ("annotator", "POST", "/api/v1/demonstrations/"),
    ("admin", "POST", "/api/v1/rounds/"),
    ("admin", "PATCH", "/api/v1/rounds/{round}/"),
    ("admin", "PUT", "/api/v1/tasks/{task}/gold/"),
    ("admin", "POST", "/api/v1/training-runs/"),
    ("admin", "POST", "/api/v1/policies/{policy}/gate/"),
    ("admin", "POST", "/api/v1/rounds/{round}/automation/"),
    ("admin", "POST", "/api/v1/snapshots/"),
    ("researcher", "POST", "/api/v1/exports/"),
    ("anonymous", "POST", "/api/v1/auth/token/"),
]
ROUTE_IDS = [f"{method} {url}" for _, method, url in JSON_ROUTES]
DEEP_BODIES = {
    "arrays": b"[" * 10_000 + b"]" * 10_000,
    "objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "inside a field": b'{"ranking": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "100 levels": b'{"recipe": ' + b'{"a": ' * 100 + b"1" + b"}" * 101,
}


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "method", "url"), JSON_ROUTES, ids=ROUTE_IDS)
def test_deep_huge_and_non_finite_json_are_4xx_on_every_json_route(
    world: dict[str, Any], who: str, method: str, url: str, settings: Any
) -> None:
    for name, raw in DEEP_BODIES.items():
        body = error_of(send(world, who, method, url, raw))
        assert body["code"] in ("parse_error", "invalid"), (name, body)
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = error_of(send(world, who, method, url, b'{"time_spent_ms": ' + literal + b"}"))
        assert body["code"] == "parse_error" and "not JSON compliant" in body["detail"]
        assert body["fields"] == {"body": [body["detail"]]}  # the body itself is at fault
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = error_of(send(world, who, method, url, b'{"a": "' + b"x" * 10_001 + b'"}'), 413)
    assert body["code"] == "too_large" and body["fields"] == {"body": [body["detail"]]}
    for bad in (b'{"a": 1', b"\xff\xfe", b'{"a": "\x00"}'):  # cut short, not UTF-8, raw control
        assert error_of(send(world, who, method, url, bad))["code"] == "parse_error"


@pytest.mark.django_db
def test_a_body_over_the_real_limit_is_a_413_and_stores_nothing(world: dict[str, Any]) -> None:
    body = valid_body(world["task"])
    body["rationale"] = "x" * (5 * 1024 * 1024 + 1)
    raw = json.dumps(body).encode()
    url = "/api/v1/assignments/{assignment}/submit/"
    assert error_of(send(world, "annotator", "POST", url, raw), 413)["code"] == "too_large"
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_imports_over_their_own_limit_are_413(world: dict[str, Any], settings: Any) -> None:
    settings.IMPORT_MAX_BYTES = 1000
    line = json.dumps({"prompt": "x" * 2000}).encode() + b"\n"
    url = "/api/v1/prompts/import/"
    assert error_of(send(world, "admin", "POST", url, line, NDJSON), 413)["code"] == "too_large"
    upload = io.BytesIO(line)
    upload.name = "big.jsonl"
    response = world["clients"]["admin"].post(url, {"file": upload}, format="multipart")
    assert error_of(response, 413)["fields"] == {"file": ["At most 1000 bytes."]}
    assert Prompt.objects.count() == 2  # the round's, nothing new


INF = "__1e999__"


def ascii_json(value: Any) -> bytes:
    """JSON as a client sends it: a lone surrogate as its \\ud800 escape, NUL as \\u0000, and
    the string INF as the literal 1e999 (which Python's decoder reads as infinity)."""
    return json.dumps(value).encode("ascii").replace(f'"{INF}"'.encode(), b"1e999")


def _submit(world: dict[str, Any], **changes: Any) -> bytes:
    return ascii_json({**valid_body(world["task"]), **changes})


# (persona, method, url, body builder, content type, the field named, its reason)
TEXT_CASES = [
    ("annotator", "POST", "/api/v1/assignments/{assignment}/submit/",
     lambda w: _submit(w, rationale="ok\x00"), J, "rationale", NUL),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/submit/",
     lambda w: _submit(w, rationale="ok\ud800"), J, "rationale", SURROGATE),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/submit/",
     lambda w: _submit(w, **{"x\ud83d": 1}), J, "x\\ud83d", KEY_REASONS[SURROGATE]),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/submit/",
     lambda w: _submit(w, flags=["pii\x00"]), J, "flags.0", NUL),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/skip/",
     lambda w: ascii_json({"reason": "\x00"}), J, "reason", NUL),
    ("annotator", "POST", "/api/v1/assignments/{assignment}/skip/",
     lambda w: ascii_json({"reason": "\udfff"}), J, "reason", SURROGATE),
    ("annotator", "POST", "/api/v1/demonstrations/",
     lambda w: ascii_json({"prompt": 1, "text": "a\x00b"}), J, "text", NUL),
    ("annotator", "POST", "/api/v1/demonstrations/",
     lambda w: ascii_json({"prompt": 1, "text": "a\ud800b"}), J, "text", SURROGATE),
    ("admin", "POST", "/api/v1/rounds/",
     lambda w: ascii_json({"k": 3, "tags": ["math\x00"]}), J, "tags.0", NUL),
    ("admin", "POST", "/api/v1/training-runs/",
     lambda w: ascii_json({"kind": "sft", "recipe": {"note": "\ud800"}}), J, "recipe.note",
     SURROGATE),
    ("admin", "PUT", "/api/v1/tasks/{task}/gold/",
     lambda w: ascii_json({"ranking": [["\ud800"]]}), J, "ranking.0.0", SURROGATE),
    ("researcher", "POST", "/api/v1/exports/",
     lambda w: ascii_json({"filters": {"policies": ["a\x00"]}}), J, "filters.policies.0", NUL),
    ("anonymous", "POST", "/api/v1/auth/token/",
     lambda w: ascii_json({"username": "admin\x00", "password": "x"}), J, "username", NUL),
    ("admin", "POST", "/api/v1/prompts/import/",
     lambda w: b'{"prompt": "a\\u0000b"}\n', NDJSON, "line 1: prompt",
     "Must not contain NUL characters."),
    ("admin", "POST", "/api/v1/prompts/import/",
     lambda w: b'{"prompt": "a\\ud800b"}\n', NDJSON, "line 1: prompt", SURROGATE),
    ("admin", "POST", "/api/v1/prompts/import/",
     lambda w: b'{"prompt": "ok", "\\ud800": 1}\n', NDJSON, "line 1: \\ud800",
     "Unknown field; allowed: messages, prompt, completions, tags, safety, source."),
    ("admin", "POST", "/api/v1/prompts/import/?source=a%00b",
     lambda w: b'{"prompt": "fine"}\n', NDJSON, "source", NUL),
    ("admin", "POST", "/api/v1/snapshots/text/?name=%00",
     lambda w: b"one document\n\nanother\n", "text/plain", "name", NUL),
]  # fmt: skip
TEXT_IDS = [f"{c[1]} {c[2]} {c[5]}" for c in TEXT_CASES]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "method", "url", "build", "ct", "field", "reason"), TEXT_CASES, ids=TEXT_IDS
)
def test_nul_and_lone_surrogates_in_text_are_400s_naming_the_field(
    world: dict[str, Any], who: str, method: str, url: str, build: Any, ct: str, field: str,
    reason: str,
) -> None:  # fmt: skip
    body = error_of(send(world, who, method, url, build(world), ct))
    assert body["fields"].get(field) == [reason], body
    assert not Judgment.objects.exists() and not Demonstration.objects.exists()
    assert Prompt.objects.count() == 2
    assert Assignment.objects.get().status == Assignment.Status.LEASED


READ_CASES = [
    ("researcher", "/api/v1/exports/preferences/?policy=a%00b", "policy", NUL),
    ("researcher", "/api/v1/exports/preferences/?rubric=%00", "rubric", NUL),
    ("researcher", "/api/v1/quality/annotators/?round=%00", "round", NUL),
    ("researcher", "/api/v1/quality/disagreements/?round=%C2%B2", "round",
     "'²' is not a round number."),
    ("researcher", "/api/v1/exports/preferences/?round=%C2%B2", "round",
     "'²' is not a round number."),
    ("researcher", "/api/v1/exports/preferences/?min_trust=nan", "min_trust",
     "Must be a number from 0 to 1, got 'nan'."),
    ("researcher", "/api/v1/exports/preferences/?since=%ED%A0%80", "since",
     "'\ufffd\ufffd\ufffd' is not an ISO date or datetime."),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "url", "field", "reason"), READ_CASES, ids=[c[1] for c in READ_CASES]
)
def test_hostile_query_strings_are_400s_naming_the_parameter(
    world: dict[str, Any], who: str, url: str, field: str, reason: str
) -> None:
    body = error_of(world["clients"][who].get(url))
    assert body["fields"].get(field) == [reason], body


@pytest.mark.django_db
def test_strings_and_floats_for_integers_are_400s_naming_the_field(world: dict[str, Any]) -> None:
    task, ids = world["task"], [c["id"] for c in world["task"]["completions"]]
    url = "/api/v1/assignments/{assignment}/submit/"
    scores = valid_body(task)["scores"]
    scores[str(ids[0])]["helpful"] = "7"
    cases = [
        (_submit(world, time_spent_ms="1234"), "time_spent_ms"),
        (_submit(world, time_spent_ms=INF), "time_spent_ms"),
        (_submit(world, scores=scores), f"scores.{ids[0]}.helpful"),
        (_submit(world, ranking=[[str(i)] for i in ids]), "ranking.0.0"),
    ]
    for raw, field in cases:
        assert field in error_of(send(world, "annotator", "POST", url, raw))["fields"]
    admin_cases = [
        ("/api/v1/rounds/", {"k": "3"}, "k"),
        ("/api/v1/rounds/", {"k": 3.0}, "k"),
        ("/api/v1/rounds/", {"k": True}, "k"),
        ("/api/v1/rounds/", {"k": 3, "temperature": INF}, "temperature"),
        ("/api/v1/rounds/{round}/", {"gold_rate": "lots"}, "gold_rate"),
    ]
    for url, value, field in admin_cases:
        method = "PATCH" if "{round}" in url else "POST"
        assert field in error_of(send(world, "admin", method, url, ascii_json(value)))["fields"]
    demo = ascii_json({"prompt": "1", "text": "x"})
    assert (
        "prompt"
        in error_of(send(world, "annotator", "POST", "/api/v1/demonstrations/", demo))["fields"]
    )
    assert not Judgment.objects.exists() and not Round.objects.exclude(pk=world["ids"]["round"])


@pytest.mark.django_db
def test_unknown_fields_in_a_judgment_are_rejected_by_name(world: dict[str, Any]) -> None:
    """DESIGN §4: the judgment body is validated strictly, so a field the server owns (who
    judged, when, which judgment) is an error, never silently taken."""
    url = "/api/v1/assignments/{assignment}/submit/"
    raw = _submit(world, annotator=1, id="x", created_at="2000-01-01", rubric=99)
    fields = error_of(send(world, "annotator", "POST", url, raw))["fields"]
    assert set(fields) == {"annotator", "id", "created_at", "rubric"}
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_a_judgment_is_stored_exactly_once_whatever_the_hostile_attempts_before(
    world: dict[str, Any],
) -> None:
    """After every refusal above the same assignment still takes a good judgment."""
    url = submit_url(world["ids"]["assignment"])
    client = world["clients"]["annotator"]
    for raw in (DEEP_BODIES["arrays"], _submit(world, rationale="\ud800"), b"NaN"):
        error_of(client.generic("POST", url, raw, content_type=J))
    response = client.post(url, valid_body(world["task"]), format="json")
    assert response.status_code == 200, response.content
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/prompts/import/", "/api/v1/snapshots/text/"])
def test_multipart_bodies_over_the_limits_are_json_4xx(
    world: dict[str, Any], url: str, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    client = world["clients"]["admin"]
    big_field = client.post(url, {"note": "x" * 2000}, format="multipart")
    assert error_of(big_field, 413)["code"] == "too_large"
    many_fields = client.post(url, {f"f{i}": "x" for i in range(20)}, format="multipart")
    assert error_of(many_fields)["code"] in ("parse_error", "invalid")
    assert Prompt.objects.count() == 2
