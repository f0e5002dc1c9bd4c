"""The rubric's answer checks (``annotation.rubrics``), called directly: a ranking and 3H scores
are validated the same way for an annotator's judgment and for an admin's gold reference."""

from __future__ import annotations

import pytest

from annotation.judgments import judgment_validate
from annotation.rubrics import ranking_validate, rubric_current, scores_validate
from feedback.platform.errors import DomainError

pytestmark = pytest.mark.django_db

IDS = [11, 12, 13]


def scores_for(ids: list[int], value: object = 4) -> dict[str, dict[str, object]]:
    return {str(cid): {"helpful": value, "honest": value, "harmless": value} for cid in ids}


def test_a_ranking_with_a_tie_comes_back_canonical():
    errors: dict[str, list[str]] = {}
    clean = ranking_validate(ranking=[[13], [12, 11]], completion_ids=IDS, errors=errors)
    assert errors == {}
    assert clean == [[13], [11, 12]]


@pytest.mark.parametrize(
    ("ranking", "path", "reason"),
    [
        ([], "ranking", "Must be a non-empty list of groups"),
        ([[11], "12", [13]], "ranking.1", "got a string"),
        ([[11, True], [12], [13]], "ranking.0.1", "got a boolean"),
        ([[11], [12], [99]], "ranking.2.0", "99 is not a completion of this task"),
        ([[11], [12, 11], [13]], "ranking.1.1", "Completion 11 is ranked more than once"),
        ([[11], [12]], "ranking", "missing: [13]"),
    ],
)
def test_a_bad_ranking_names_the_place_at_fault(ranking, path, reason):
    errors: dict[str, list[str]] = {}
    ranking_validate(ranking=ranking, completion_ids=IDS, errors=errors)
    assert list(errors) == [path]
    assert reason in errors[path][0]


def test_scores_on_every_axis_pass():
    errors: dict[str, list[str]] = {}
    clean = scores_validate(
        scores=scores_for(IDS), completion_ids=IDS, rubric=rubric_current(), errors=errors
    )
    assert errors == {}
    assert clean == scores_for(IDS)


@pytest.mark.parametrize(
    ("change", "path", "reason"),
    [
        (lambda s: s["11"].update(helpful="5"), "scores.11.helpful", "got a string"),
        (lambda s: s["11"].update(helpful=5.0), "scores.11.helpful", "got a float"),
        (lambda s: s["12"].update(honest=8), "scores.12.honest", "from 1 to 7, got 8"),
        (lambda s: s["12"].pop("harmless"), "scores.12.harmless", "Missing."),
        (lambda s: s["13"].update(funny=3), "scores.13.funny", "Unknown axis"),
        (lambda s: s.pop("13"), "scores.13", "every completion needs a score"),
        (lambda s: s.update({"99": {}}), "scores.99", "not a completion of this task"),
    ],
)
def test_a_bad_score_names_the_axis_at_fault(change, path, reason):
    scores = scores_for(IDS)
    change(scores)
    errors: dict[str, list[str]] = {}
    scores_validate(scores=scores, completion_ids=IDS, rubric=rubric_current(), errors=errors)
    assert list(errors) == [path]
    assert reason in errors[path][0]


def test_a_judgment_reports_the_rubric_checks_unchanged():
    rubric = rubric_current()
    ranking, scores = [[11], [11], [13]], scores_for(IDS, value=0)
    expected: dict[str, list[str]] = {}
    ranking_validate(ranking=ranking, completion_ids=IDS, errors=expected)
    scores_validate(scores=scores, completion_ids=IDS, rubric=rubric, errors=expected)
    body = {"ranking": ranking, "scores": scores, "strength": "better", "time_spent_ms": 1}
    _, errors = judgment_validate(body=body, completion_ids=IDS, rubric=rubric)
    assert errors == expected


def test_an_unknown_rubric_name_is_a_400():
    with pytest.raises(DomainError) as raised:
        rubric_current(name="no-such-rubric")
    assert raised.value.fields == {"rubric": ["Does not exist."]}
