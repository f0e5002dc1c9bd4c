"""Every export format, written as JSONL and as Parquet and loaded back with ``datasets``, checked
against the judgments it came from; every filter, through the API and the CLI.

The data: round 1 has two prompts (one with a system turn) judged by two annotators, who agree
on the sum and disagree completely on the colour; round 2 has one prompt judged once, all of its
completions from one policy. Rankings are given by a completion's position in its task (each
annotator is shown the task in an order of their own, recorded as ``display_order``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from annotation.exports import (
    FORMATS,
    ExportFilters,
    annotator_pseudonym,
    export_filters_parse,
    export_rows,
    export_source_count,
    export_write,
)
from annotation.exports.formats.hh_rlhf import hh_transcript
from annotation.imports import prompts_import
from annotation.models import ComparisonTask, Demonstration, Judgment
from annotation.quality import annotator_trust_scores
from annotation.rounds import round_open_from_imported
from feedback.models import Completion
from feedback.platform.errors import DomainError
from feedback.platform.roles import Role, role_grant

from .helpers import lease, submit_url

pytestmark = pytest.mark.django_db
URL = "/api/v1/exports/preferences/"
SUM, COLOUR, HELLO = "What is 2 + 2?", "Name a colour.", "Say hello."
STRENGTH = {"significantly_better": 1.0, "better": 0.6667, "slightly_better": 0.3333}
# (ranking by shown position, strength, the score every axis gets by position, flags, rationale)
FIRST = ([[0], [1], [2]], "better", [7, 5, 2], [], "the first is right")
SECOND = {
    SUM: ([[0], [1, 2]], "slightly_better", [6, 3, 3], ["unsafe"], "the last two are as bad"),
    COLOUR: ([[2], [1], [0]], "significantly_better", [1, 4, 7], ["pii"], "the last is right"),
}


def _person(username: str, role: Role) -> Any:
    user = get_user_model().objects.create(username=username)
    role_grant(user=user, role=role)
    return user


# The personas of tests/conftest.py, without a password: the API client signs in with a token,
# and hashing a password (PBKDF2) costs a third of a second per user, most of a test here.
@pytest.fixture
def annotator(db: None) -> Any:
    return _person("ann1", Role.ANNOTATOR)


@pytest.fixture
def annotator2(db: None) -> Any:
    return _person("ann2", Role.ANNOTATOR)


@pytest.fixture
def researcher(db: None) -> Any:
    return _person("researcher", Role.RESEARCHER)


@pytest.fixture
def admin(db: None) -> Any:
    return _person("admin", Role.ADMIN)


def _line(user: str, answers: list[str], model: str, system: str = "") -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    completions = [{"text": text, "model": f"{model}-{i}" if model != "delta" else model}
                   for i, text in enumerate(answers)]  # fmt: skip
    return json.dumps({"messages": messages, "completions": completions})


def _judge(client: Any, plan: Any) -> int:
    judged = 0
    while (task := lease(client)) is not None:
        ranking, strength, scores, flags, rationale = plan(
            task["prompt"]["messages"][-1]["content"]
        )
        # By the task's positions, not the order this annotator was shown (each has their own):
        # two annotators' plans then speak of the same completions.
        ids = list(
            ComparisonTask.objects.get(pk=task["task"])
            .slots.order_by("position")
            .values_list("completion_id", flat=True)
        )
        assert sorted(ids) == sorted(c["id"] for c in task["completions"])
        axes = [axis["key"] for axis in task["rubric"]["axes"]]
        body = {
            "ranking": [[ids[p] for p in group] for group in ranking],
            "scores": {str(ids[p]): dict.fromkeys(axes, s) for p, s in enumerate(scores)},
            "strength": strength, "flags": flags, "rationale": rationale, "time_spent_ms": 900,
        }  # fmt: skip
        response = client.post(submit_url(task["assignment"]), body, format="json")
        assert response.status_code == 200, response.content
        judged += 1
    return judged


@dataclass
class Data:
    first: Any
    second: Any

    def judgments(self, **where: Any) -> list[Judgment]:
        return list(Judgment.objects.filter(**where).select_related("task__prompt", "rubric"))


@pytest.fixture
def data(api, annotator, annotator2) -> Data:
    prompts_import(
        lines=[
            _line(SUM, ["4", "5", "22"], "alpha", system="Answer with a number."),
            _line(COLOUR, ["Blue.", "Seven.", "No."], "alpha"),
        ]
    )
    round_open_from_imported(k=3, overlap=2, seed=3)
    assert _judge(api(annotator), lambda _: FIRST) == 2
    assert _judge(api(annotator2), lambda prompt: SECOND[prompt]) == 2
    prompts_import(lines=[_line(HELLO, ["Hello!", "Hi.", "Go away."], "delta")])
    round_open_from_imported(k=3, overlap=1, seed=3)
    assert _judge(api(annotator), lambda _: FIRST) == 1
    return Data(annotator, annotator2)


def expected_pairs(judgment: Judgment) -> dict[tuple[int, int], float]:
    """C(K,2) minus ties: the strength's margin for the best against the next group when the
    best is alone, otherwise the gap of mean scores over the scale's width (6), floored at 0."""
    groups = judgment.ranking

    def mean(cid: int) -> float:
        scores = judgment.scores[str(cid)]
        return sum(scores.values()) / len(scores)

    pairs = {}
    for i, better in enumerate(groups):
        for j in range(i + 1, len(groups)):
            for chosen in better:
                for rejected in groups[j]:
                    if (i, j) == (0, 1) and len(better) == 1:
                        margin = STRENGTH[judgment.strength]
                    else:
                        margin = round(max(0.0, (mean(chosen) - mean(rejected)) / 6), 4)
                    pairs[chosen, rejected] = margin
    return pairs


def write_and_load(tmp_path: Path, fmt: str, file_format: str, **filters: Any) -> list[dict]:
    """Write with ``export_write``, load with ``datasets``, and check that the file holds
    exactly the rows ``export_rows`` gives."""
    import datasets

    parsed = ExportFilters(**filters)
    out = tmp_path / f"{fmt}-{len(list(tmp_path.iterdir()))}.{file_format}"
    result = export_write(fmt=fmt, file_format=file_format, filters=parsed, out=out)
    assert out.exists() and not out.with_name(out.name + ".partial").exists()
    assert result.size_bytes == out.stat().st_size
    # chunksize=1 makes every JSON line its own block, each cast to the first one's types:
    # a column whose type changes anywhere in the file fails here, not only in a huge file.
    extra = {"chunksize": 1} if file_format == "jsonl" else {}
    loaded = datasets.load_dataset(
        "json" if file_format == "jsonl" else "parquet", data_files=str(out), split="train",
        cache_dir=str(tmp_path / "hf-cache"), **extra,
    ).to_list()  # fmt: skip
    assert loaded == list(export_rows(fmt=fmt, filters=parsed))
    assert result.rows == len(loaded)
    return loaded


@pytest.fixture(params=["jsonl", "parquet"])
def file_format(request, monkeypatch, tmp_path) -> str:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return request.param


def completion(cid: int) -> Completion:
    return Completion.objects.select_related("policy_version").get(pk=cid)


def check_pair_rows(rows: list[dict], data: Data) -> None:
    by_judgment: dict[str, dict[tuple[int, int], float]] = {}
    for row in rows:
        judgment = Judgment.objects.select_related("task__round", "rubric").get(
            pk=row["judgment_id"]
        )
        pair = row["chosen_completion_id"], row["rejected_completion_id"]
        by_judgment.setdefault(row["judgment_id"], {})[pair] = row["margin"]
        ranks = {cid: i + 1 for i, group in enumerate(judgment.ranking) for cid in group}
        assert (row["chosen_rank"], row["rejected_rank"]) == (ranks[pair[0]], ranks[pair[1]])
        assert row["chosen_rank"] < row["rejected_rank"]
        chosen, rejected = completion(pair[0]), completion(pair[1])
        assert (row["chosen_policy"], row["rejected_policy"]) == (
            chosen.policy_version.name, rejected.policy_version.name,
        )  # fmt: skip
        assert row["chosen_scores"] == judgment.scores[str(pair[0])]
        assert row["round"] == judgment.task.round.number and row["rubric"] == "3H@1"
        assert row["task_id"] == judgment.task_id and row["axis"] == ""
        assert row["annotator"] == annotator_pseudonym(judgment.annotator_id)
        assert row["strength"] == judgment.strength
        assert row["flags"] == {f: f in judgment.flags for f in judgment.rubric.flag_keys}
    judgments = {str(j.pk): j for j in data.judgments()}
    assert by_judgment == {pk: expected_pairs(judgments[pk]) for pk in by_judgment}
    assert set(by_judgment) == set(judgments)
    # C(3,2) = 3 pairs per judgment, one fewer for the one with a tie.
    assert len(rows) == 3 * 5 - 1


def test_trl_pairs_with_an_explicit_prompt(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "trl", file_format)
    check_pair_rows(rows, data)
    for row in rows:
        chosen = completion(row["chosen_completion_id"])
        assert row["prompt"] == chosen.prompt.messages
        assert row["chosen"] == [{"role": "assistant", "content": chosen.text}]
        rejected = completion(row["rejected_completion_id"]).text
        assert row["rejected"] == [{"role": "assistant", "content": rejected}]


def test_trl_implicit_pairs_are_whole_conversations(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "trl_implicit", file_format)
    check_pair_rows(rows, data)
    for row in rows:
        assert "prompt" not in row
        chosen = completion(row["chosen_completion_id"])
        turn = {"role": "assistant", "content": chosen.text}
        assert row["chosen"] == [*chosen.prompt.messages, turn]


def test_hh_rlhf_transcripts(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "hh_rlhf", file_format)
    check_pair_rows(rows, data)
    with_system = next(
        r
        for r in rows
        if completion(r["chosen_completion_id"]).prompt.messages[0]["role"] == "system"
    )
    chosen = completion(with_system["chosen_completion_id"]).text
    rejected = completion(with_system["rejected_completion_id"]).text
    # The system turn goes before the first Human turn, as in Anthropic's text prompts.
    system = "Answer with a number.\n\nHuman: What is 2 + 2?\n\nAssistant: "
    assert (with_system["chosen"], with_system["rejected"]) == (system + chosen, system + rejected)
    assert hh_transcript([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == (
        "\n\nHuman: a\n\nAssistant: b"
    )  # fmt: skip


def test_ultrafeedback_ratings_per_axis(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "ultrafeedback", file_format)
    judgments = {str(j.pk): j for j in data.judgments()}
    assert sorted(r["judgment_id"] for r in rows) == sorted(judgments)
    for row in rows:
        judgment = judgments[row["judgment_id"]]
        assert row["instruction"] == judgment.task.prompt.messages[-1]["content"]
        assert row["prompt"] == judgment.task.prompt.messages
        assert row["ranking"] == judgment.ranking and row["rubric"] == "3H@1"
        assert row["annotator"] == annotator_pseudonym(judgment.annotator_id)
        assert len(row["completions"]) == 3
        for item in row["completions"]:
            source = completion(item["completion_id"])
            assert (item["model"], item["response"]) == (source.policy_version.name, source.text)
            assert item["annotations"] == {
                axis: {"Rating": score, "Rationale": judgment.rationale}
                for axis, score in judgment.scores[str(item["completion_id"])].items()
            }
    helpful = write_and_load(tmp_path, "ultrafeedback", file_format, axis="helpful")
    assert {key for row in helpful for c in row["completions"] for key in c["annotations"]} == {
        "helpful"
    }


def test_kto_examples_best_desirable_worst_undesirable(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "kto", file_format)
    # Per judgment: the best group desirable, the worst undesirable (2 rows each, 3 with the tie).
    assert len(rows) == 2 * 4 + 3
    for row in rows:
        (judgment_id,) = row["judgment_ids"]
        ranking = Judgment.objects.get(pk=judgment_id).ranking
        assert row["completion_id"] in (ranking[0] if row["label"] else ranking[-1])
        assert row["completion"] == [
            {"role": "assistant", "content": completion(row["completion_id"]).text}
        ]
    consensus = write_and_load(tmp_path, "kto", file_format, consensus="bradley_terry")
    # The sum's consensus orders all three; the colour's opposite rankings cancel; hello: one.
    assert sorted(len(r["judgment_ids"]) for r in consensus) == [1, 1, 2, 2]


def test_sft_messages_from_demonstrations(api, data, tmp_path, file_format):
    prompt = Judgment.objects.filter(task__round__number=2).first().task.prompt
    source = prompt.completions.order_by("id").first()
    client = api(data.first)
    for body in ({"prompt": prompt.pk, "text": "Hello there!", "source_completion": source.pk},
                 {"prompt": prompt.pk, "text": "Hello."}):  # fmt: skip
        assert client.post("/api/v1/demonstrations/", body, format="json").status_code == 201
    rows = write_and_load(tmp_path, "sft", file_format)
    demos = list(Demonstration.objects.order_by("created_at", "id"))
    assert [r["demonstration_id"] for r in rows] == [d.pk for d in demos]
    assert rows[0]["messages"] == [
        *prompt.messages,
        {"role": "assistant", "content": "Hello there!"},
    ]
    assert [r["source_completion_id"] for r in rows] == [source.pk, 0]
    assert rows[0]["author"] == annotator_pseudonym(data.first.pk)
    assert rows[1]["created_at"] == demos[1].created_at.isoformat()
    assert len(write_and_load(tmp_path, "sft", file_format, rounds=[2])) == 2
    # (datasets cannot load a file without rows, so the empty export is checked as rows)
    assert list(export_rows(fmt="sft", filters=ExportFilters(rounds=(1,)))) == []


def test_raw_judgments_keep_every_field(data, tmp_path, file_format):
    rows = write_and_load(tmp_path, "judgments", file_format)
    judgments = {str(j.pk): j for j in data.judgments()}
    assert sorted(r["judgment_id"] for r in rows) == sorted(judgments)
    for row in rows:
        judgment = judgments[row["judgment_id"]]
        assert row["assignment_id"] == str(judgment.assignment_id)
        assert (row["ranking"], row["strength"], row["rationale"]) == (
            judgment.ranking, judgment.strength, judgment.rationale,
        )  # fmt: skip
        assert row["time_spent_ms"] == 900 and row["gold"] is False
        assert row["round_policy"] == ""  # imported rounds have no serving policy
        assert row["flags"] == {f: f in judgment.flags for f in judgment.rubric.flag_keys}
        assert {(s["completion_id"], s["axis"]): s["score"] for s in row["scores"]} == {
            (int(cid), axis): score
            for cid, per_axis in judgment.scores.items()
            for axis, score in per_axis.items()
        }
        assert [c["position"] for c in row["completions"]] == [0, 1, 2]
        # The order this annotator was shown: the task's completions, in an order of its own.
        assert row["display_order"] == judgment.display_order
        assert sorted(row["display_order"]) == sorted(
            c["completion_id"] for c in row["completions"]
        )
        assert row["created_at"] == judgment.created_at.isoformat()
        assert row["annotator"] == annotator_pseudonym(judgment.annotator_id)


# --- Filters ------------------------------------------------------------------------------------


def judgment_ids(fmt: str = "trl", **filters: Any) -> set[str]:
    rows = export_rows(fmt=fmt, filters=ExportFilters(**filters))
    return {row["judgment_id"] for row in rows}


def test_filters_keep_and_drop_the_right_judgments(data):
    first, second = data.first.pk, data.second.pk
    every = {str(j.pk) for j in data.judgments()}
    of = lambda **where: {str(j.pk) for j in data.judgments(**where)}  # noqa: E731
    assert judgment_ids() == every
    assert judgment_ids(rounds=[2]) == of(task__round__number=2)
    assert judgment_ids(policies=["delta"]) == of(task__round__number=2)
    assert judgment_ids(policies=["alpha-0", "delta"]) == every
    assert judgment_ids(rubric="3H@1") == every
    assert judgment_ids(flags=["unsafe"]) == of(
        annotator_id=second, task__prompt__messages__1__content=SUM
    )
    assert judgment_ids(flags=["unsafe", "pii"]) == of(annotator_id=second)
    assert judgment_ids(exclude_flags=["unsafe", "pii"]) == of(annotator_id=first)
    last = Judgment.objects.get(task__round__number=2)
    assert judgment_ids(since=last.created_at) == {str(last.pk)}  # since is inclusive
    assert str(last.pk) not in judgment_ids(until=last.created_at)  # until is not
    assert len(judgment_ids(until=last.created_at)) == 4
    # The sum: both put the same answer first (agreement 1); the colour: reversed (0); hello
    # was judged once and has no agreement, so any min_agreement drops it.
    assert judgment_ids(min_agreement=0.5) == of(task__prompt__messages__1__content=SUM)
    assert judgment_ids(min_agreement=0.0) == of(task__round__number=1)


def test_axis_pairs_come_from_that_axis_scores(data):
    rows = list(export_rows(fmt="trl", filters=ExportFilters(axis="helpful")))
    assert {row["axis"] for row in rows} == {"helpful"}
    for row in rows:
        scores = Judgment.objects.get(pk=row["judgment_id"]).scores
        high = scores[str(row["chosen_completion_id"])]["helpful"]
        low = scores[str(row["rejected_completion_id"])]["helpful"]
        assert high > low and row["margin"] == round((high - low) / 6, 4)
    assert len(rows) == 3 * 4 + 2  # scores tied on one pair of the tie


def test_consensus_and_trust_weighting(data):
    equal = list(export_rows(fmt="trl", filters=ExportFilters(consensus="bradley_terry")))
    by_task: dict[int, list[dict]] = {}
    for row in equal:
        by_task.setdefault(row["task_id"], []).append(row)
    colour = Judgment.objects.filter(task__prompt__messages__0__content=COLOUR).first().task_id
    # Opposite rankings of equal weight cancel out: the colour gives no pair.
    assert colour not in by_task
    assert sorted(len(rows) for rows in by_task.values()) == [3, 3]
    assert {row["consensus"] for row in equal} == {"bradley_terry", "single"}
    assert all(0 < row["margin"] <= 1 for row in equal)
    trust = annotator_trust_scores()
    first, second = trust[data.first.pk], trust[data.second.pk]
    assert first != second
    weighted = export_rows(
        fmt="trl", filters=ExportFilters(consensus="bradley_terry", weighting="trust")
    )
    colour_rows = [row for row in weighted if row["task_id"] == colour]
    trusted = data.first if first > second else data.second
    ranking = Judgment.objects.get(task_id=colour, annotator=trusted).ranking
    # Now the more trusted annotator's ranking wins the colour, by a small margin.
    assert {(r["chosen_completion_id"], r["rejected_completion_id"]) for r in colour_rows} == {
        (ranking[i][0], ranking[j][0]) for i in range(3) for j in range(i + 1, 3)
    }
    assert all(0 < row["margin"] < 0.2 for row in colour_rows)
    threshold = (first + second) / 2
    assert judgment_ids(min_trust=threshold) == {
        str(j.pk) for j in data.judgments(annotator=trusted)
    }


def test_names_instead_of_pseudonyms(api, data, admin, researcher):
    rows = list(export_rows(fmt="judgments", filters=ExportFilters(), pseudonymous=False))
    assert {row["annotator"] for row in rows} == {"ann1", "ann2"}
    response = api(researcher).get(URL, {"format": "judgments", "pseudonymous": "false"})
    assert response.status_code == 403
    assert response.json()["fields"] == {"pseudonymous": ["Only admins may set this to false."]}
    response = api(admin).get(URL, {"format": "judgments", "pseudonymous": "false"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert {json.loads(line)["annotator"] for line in lines} == {"ann1", "ann2"}


def test_the_api_streams_every_format_with_filters(api, data, researcher):
    for fmt in FORMATS:
        response = api(researcher).get(URL, {"format": fmt})
        assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    response = api(researcher).get(
        URL, {"format": "trl", "round": "1", "exclude_flag": "unsafe,pii", "policy": "alpha-1"}
    )
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert {row["annotator"] for row in rows} == {annotator_pseudonym(data.first.pk)}
    assert len(rows) == 6


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"policy": "nobody"}, {"policy": ["No policy version named 'nobody'."]}),
        ({"rubric": "3H"}, {"rubric": ["'3H' is not a rubric label like '3H@1'."]}),
        ({"rubric": "3H@9"}, {"rubric": ["No rubric 3H@9."]}),
        ({"min_agreement": "1.5"}, {"min_agreement": ["Must be a number from 0 to 1, got '1.5'."]}),
        ({"min_trust": "x"}, {"min_trust": ["Must be a number from 0 to 1, got 'x'."]}),
        ({"since": "yesterday"}, {"since": ["'yesterday' is not an ISO date or datetime."]}),
        ({"since": "2025-02-01", "until": "2025-01-01"}, {"until": ["Must be later than since."]}),
        ({"flag": "rude"}, {"flag": ["Unknown flag 'rude'; the rubrics have: unsafe, pii, "
                                     "gibberish, prompt_issue, all_bad."]}),
        ({"axis": "funny"}, {"axis": ["Unknown axis 'funny'; the rubrics have: helpful, honest, "
                                      "harmless."]}),
        ({"consensus": "vote"}, {"consensus": ["Must be one of: none, bradley_terry."]}),
        ({"weighting": "trust"}, {"weighting": ["Trust weighting applies to a consensus: set "
                                                "consensus=bradley_terry."]}),
        ({"format": "sft", "axis": "helpful"}, {"axis": ["Does not apply to the sft format."]}),
        ({"format": "judgments", "consensus": "bradley_terry"},
         {"consensus": ["Does not apply to the judgments format."]}),
        ({"pseudonymous": "maybe"}, {"pseudonymous": ["Must be true or false."]}),
    ],
)  # fmt: skip
def test_bad_filters_are_400s_naming_the_field(api, researcher, params, fields):
    response = api(researcher).get(URL, params)
    assert response.status_code == 400, response.content
    assert response.json()["fields"] == fields


def test_json_filters_parse_and_round_trip(data):
    filters = export_filters_parse(
        {"rounds": [1], "policies": "alpha-0", "min_trust": 0.25, "since": "2025-01-01",
         "consensus": "bradley_terry", "weighting": "trust"}
    )  # fmt: skip
    assert filters.rounds == (1,) and filters.policies == ("alpha-0",)
    assert filters.since.isoformat() == "2025-01-01T00:00:00+00:00"
    assert export_filters_parse(filters.to_params()) == filters
    with pytest.raises(DomainError) as caught:
        export_filters_parse({"round": [1], "colour": "blue"})
    assert list(caught.value.fields) == ["colour"]


def test_progress_counts_judgments_read_and_parquet_is_batched(data, tmp_path):
    import pyarrow.parquet as pq

    seen: list[int] = []
    with override_settings(EXPORT_BATCH_ROWS=4):
        result = export_write(
            fmt="trl", file_format="parquet", filters=ExportFilters(), out=tmp_path / "p.parquet",
            progress=seen.append,
        )  # fmt: skip
    assert seen[-1] == export_source_count(fmt="trl", filters=ExportFilters()) == 5
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == ceil(result.rows / 4)


def test_a_failed_write_leaves_no_file(data, tmp_path):
    def fail(read: int) -> None:
        raise RuntimeError("disk full")

    out = tmp_path / "broken.jsonl"
    with pytest.raises(RuntimeError):
        export_write(
            fmt="trl", file_format="jsonl", filters=ExportFilters(), out=out, progress=fail
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_parquet_with_a_filter(data, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "kto.parquet"
    call_command("export_preferences", "--format", "kto", "--out", str(out), "--round", "1",
                 "--exclude-flag", "pii")  # fmt: skip
    table = pq.read_table(out)
    assert table.num_rows == 2 + 2 + 3  # the first annotator's two, the sum's tie: three
    assert set(table.column("round").to_pylist()) == {1}
    assert capsys.readouterr().out.startswith(f"{table.num_rows} examples written to {out}")
    with pytest.raises(CommandError, match="min_trust: Must be a number from 0 to 1"):
        call_command("export_preferences", "--out", str(out), "--min-trust", "2")
