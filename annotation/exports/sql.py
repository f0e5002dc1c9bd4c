"""The pair formats' JSONL built by PostgreSQL and streamed with ``COPY … TO STDOUT``.

The database holds the texts, so the lines are built where they are: one query expands each
judgment's ranking into its pairs, computes the margins and writes every line, and ``COPY``
hands them over a task at a time (binary COPY, one field of lines per task, so nothing is
escaped or quoted on the way). Python only moves the bytes: with the rows built in Python an
export ran at a third of ``COPY``'s rows per second.

The bytes are ``pairs.PairBatch.jsonl``'s, that is ``json.dumps(row, ensure_ascii=False)`` of each
row (tests compare the two paths on every pair format and filter):

- strings go through ``to_json(text)``, whose escapes are ``json.dumps``'s with
  ``ensure_ascii=False``: ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other control characters as
  lowercase ``\\u00XX``, everything else raw (U+2028, non-ASCII, emoji);
- the prompt is the stored JSON's own text (``jsonb`` writes ``", "`` and ``": "`` as
  ``json.dumps`` does, keys in the order the Python path reads them back);
- a margin is ``repr(round(max(0.0, gap), 4))``: the gap is computed with the same float
  operations, and ``_ROUNDED`` rounds it exactly as Python does (see there);
- what Python knows and the database does not (pseudonyms: an HMAC with a key the database has
  not; usernames; rubric labels, widths and strength margins; annotators' trust) is computed in
  Python and passed in as JSON maps or id lists.

Applies on PostgreSQL to ``trl``, ``trl_implicit`` and ``hh_rlhf`` with every filter but the
ones that need Python per task: ``consensus`` (Bradley-Terry), ``min_agreement``
(``quality.task_agreement``) and ``axis``; those, and SQLite, take the Python path
(``sql_applies``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection

from ..models import Rubric
from .context import ExportContext
from .filters import UNKNOWN_TRUST, ExportFilters
from .formats.base import json_encode
from .records import judgments_selected

# Off switch, for tests that compare the two paths and for measuring the Python one.
ENABLED = True

# The formats built here, and how each writes a side: the assistant's turn alone (with the
# prompt in a column of its own), the prompt and the turn as one message list, or an HH-RLHF
# transcript. ``{p}`` is the prompt's JSON text, ``{h}`` its transcript, ``{t}`` the text.
_TURN = """concat('[{{"role": "assistant", "content": ', to_json({t})::text, '}}]')"""
SIDES = {
    "trl": _TURN,
    "trl_implicit": (
        "concat(left({p}, -1), CASE WHEN {p} = '[]' THEN '' ELSE ', ' END, "
        """'{{"role": "assistant", "content": ', to_json({t})::text, '}}]')"""
    ),
    "hh_rlhf": "to_json(concat({h}, E'\\n\\nAssistant: ', {t}))::text",
}
WITH_PROMPT = {"trl"}

# ``repr(round(x, 4))`` for a float x >= 0 (a margin), as Python writes it. Python rounds the
# exact binary value of x to the nearest multiple of 0.0001, ties to even. Rounding y = x·10^4
# (a float product, off from the exact one by far less than 10^-6 for any margin) gives the same
# unless y lies within 10^-6 of a half, and the result d/10^4 is then written from the integer d
# (``_FAST``). Near a half (``_NEAR_HALF``, rare) ``x::text``, the shortest decimal that reads
# back as x, is rounded instead, which gives the same unless it lies exactly halfway (five
# decimals, the last a 5); then the side of the halfway point that x really lies on decides: x
# is exactly halfway when x·32 is a whole number (a multiple of 1/32 has at most five
# decimals), and otherwise its exact value, X / 2^78 with X = a·2^52 + b·2^26 + c read 26 bits
# at a time (exact float operations for x >= 2^-25, which every halfway point is), is compared
# with the decimal. PostgreSQL has no exact float to numeric conversion (``x::numeric`` keeps
# 15 digits).
_FAST = """(floor(floor({x} * 10000 + 0.5) / 10000)::int8::text || '.' || CASE
    WHEN floor({x} * 10000 + 0.5) = floor(floor({x} * 10000 + 0.5) / 10000) * 10000 THEN '0'
    ELSE rtrim(lpad((floor({x} * 10000 + 0.5)
                     - floor(floor({x} * 10000 + 0.5) / 10000) * 10000)::int8::text, 4, '0'), '0')
    END)"""
_NEAR_HALF = """(SELECT CASE WHEN m = trunc(m) THEN trunc(m)::text || '.0'
                        ELSE trim_scale(m)::text END
FROM (SELECT CASE
     WHEN mod(y * 20000, 2) <> 1 THEN round(y, 4)
     WHEN x * 32 = floor(x * 32) THEN
          CASE WHEN mod(trunc(y * 10000), 2) = 0 THEN trunc(y, 4) ELSE trunc(y, 4) + 0.0001 END
     WHEN (floor(x * 67108864)::bigint::numeric * 4503599627370496
           + floor((x * 67108864 - floor(x * 67108864)) * 67108864)::bigint::numeric * 67108864
           + (((x * 67108864 - floor(x * 67108864)) * 67108864
               - floor((x * 67108864 - floor(x * 67108864)) * 67108864)) * 67108864)::bigint)
          > y * 302231454903657293676544
     THEN trunc(y, 4) + 0.0001
     ELSE trunc(y, 4) END AS m
     FROM (SELECT x, x::text::numeric AS y FROM (SELECT {x} AS x) AS gap) AS decimal) AS rounded)"""


def rounded_margin(x: str) -> str:
    """SQL for ``repr(round(x, 4))`` of the float ``x`` >= 0 (SQL naming it)."""
    return f"""CASE WHEN abs({x} * 10000 - floor({x} * 10000) - 0.5) <= 1e-6
        THEN {_NEAR_HALF.format(x=x)} ELSE {_FAST.format(x=x)} END"""


def sql_applies(*, fmt: str, filters: ExportFilters) -> bool:
    """Whether the export is built by the database (see the module docstring)."""
    return (
        ENABLED
        and connection.vendor == "postgresql"
        and fmt in SIDES
        and filters.consensus == "none"
        and filters.min_agreement is None
        and not filters.axis
    )


@dataclass(frozen=True)
class Query:
    sql: str
    params: dict[str, Any]


def _struct(fields: tuple[str, ...], value: Callable[[str], str]) -> str:
    """SQL writing a JSON object with ``fields`` in order, each field's value ``value(key)``
    (SQL giving JSON text); keys are encoded here, as ``json.dumps`` writes them."""
    if not fields:
        return "'{}'"
    parts = []
    for i, key in enumerate(fields):
        opening = ("{" if i == 0 else ", ") + json_encode(key) + ": "
        parts += [_literal(opening), value(key)]
    return _joined([*parts, "'}'"])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lookups(context: ExportContext) -> dict[str, Any]:
    """The maps that the query reads what only Python knows from (JSON, keys as text)."""
    filters = context.filters
    annotators = list(
        judgments_selected(filters=filters).order_by().values_list("annotator_id", flat=True)
        .distinct()
    )  # fmt: skip
    rubrics = {}
    margins = {}
    for rubric in Rubric.objects.all():
        first = rubric.axes[0] if rubric.axes else {"max": 0, "min": 0}
        width = float(first["max"]) - float(first["min"])
        rubrics[str(rubric.pk)] = {"w": repr(width), "label": json_encode(rubric.label)}
        for key, margin in rubric.strength_margins.items():
            margins[f"{rubric.pk}:{key}"] = repr(margin)
    params: dict[str, Any] = {
        "names": json.dumps({str(a): json_encode(context.annotator(a)) for a in annotators}),
        "rubrics": json.dumps(rubrics),
        "margins": json.dumps(margins),
        "axis": json_encode(filters.axis),
    }
    if filters.min_trust is not None:
        params["trusted"] = [
            a for a in annotators
            if context.trust.get(a, UNKNOWN_TRUST) >= filters.min_trust
        ]  # fmt: skip
    return params


def _where(
    filters: ExportFilters, params: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """``records.judgments_selected`` and ``records._kept`` as SQL: the conditions on the task
    (t, r), on the judgments read (j) and on those kept (j, the flag and trust filters, and
    ``include_none_acceptable``). The
    judgments read are the current ones, as ``Judgment.objects`` gives them: a judgment that a
    correction superseded is in no export."""
    on_task: list[str] = []
    on_judgment: list[str] = ["j.superseded_by_id IS NULL"]
    if filters.rounds:
        params["rounds"] = list(filters.rounds)
        on_task.append("r.number = ANY(%(rounds)s::int[])")
    if filters.policies:
        params["policies"] = list(filters.policies)
        on_task.append(
            "EXISTS (SELECT 1 FROM annotation_taskcompletion tp"
            " JOIN feedback_completion cp ON cp.id = tp.completion_id"
            " JOIN feedback_policyversion vp ON vp.id = cp.policy_version_id"
            " WHERE tp.task_id = t.id AND vp.name = ANY(%(policies)s::text[]))"
        )
    if filters.rubric:
        name, version = filters.rubric.rsplit("@", 1)
        params["rubric"] = Rubric.objects.get(name=name, version=int(version)).pk
        on_judgment.append("j.rubric_id = %(rubric)s")
    if filters.since:
        params["since"] = filters.since
        on_judgment.append("j.created_at >= %(since)s")
    if filters.until:
        params["until"] = filters.until
        on_judgment.append("j.created_at < %(until)s")
    kept = []
    if filters.flags:
        params["flags"] = list(filters.flags)
        kept.append("j.flags ?| %(flags)s::text[]")
    if filters.exclude_flags:
        params["exclude_flags"] = list(filters.exclude_flags)
        kept.append("NOT j.flags ?| %(exclude_flags)s::text[]")
    if filters.min_trust is not None:
        kept.append("j.annotator_id = ANY(%(trusted)s::int[])")
    if not filters.include_none_acceptable:
        # As ``pairs.PairBatch`` leaves them out: both sides of their pairs are bad answers.
        kept.append("NOT j.none_acceptable")
    return on_task, on_judgment, kept


class Text(str):
    """A constant piece of a line (the others are SQL giving text)."""


def _formatted(pieces: list[str]) -> str:
    """SQL writing ``pieces`` one after the other with one ``format()``: one buffer for the
    whole line, where ``||`` makes a new string per piece (a line is ~1.5 kB). Its ``%`` are
    doubled for psycopg, which binds the query's parameters."""
    template = "".join(
        piece.replace("%", "%%%%") if isinstance(piece, Text) else "%%s" for piece in pieces
    )
    values = [piece for piece in pieces if not isinstance(piece, Text)]
    return f"format({_literal(template)}, {', '.join(values)})"


def _joined(pieces: list[str]) -> str:
    """SQL concatenating ``pieces`` from the right: ``a || (b || (c || d))`` copies each short
    piece at the end of a line a few times rather than the whole line once per piece, which
    made building the lines take twice as long."""
    joined = pieces[-1]
    for piece in reversed(pieces[:-1]):
        joined = f"{piece} || ({joined})"
    return joined


def _mean(axes: tuple[str, ...]) -> str:
    """SQL for a completion's mean score in judgment j (``e.cid``), NULL without scores: the
    sum of the rubric axes' scores when the completion has no others (reading them one by one
    is a tenth of the time of ``jsonb_each_text``), else of every score it has."""
    scored = "j.scores -> e.cid"
    every = f"(SELECT sum(v::float8) / count(*) FROM jsonb_each_text({scored}) AS sv(k, v))"
    if not axes:
        return every
    names = "ARRAY[" + ", ".join(_literal(axis) for axis in axes) + "]"
    total = " + ".join(f"coalesce(({scored} ->> {_literal(axis)})::float8, 0)" for axis in axes)
    count = " + ".join(f"({scored} ? {_literal(axis)})::int" for axis in axes)
    return (
        f"CASE WHEN ({scored}) - {names} = '{{}}'::jsonb"
        f" THEN ({total}) / nullif({count}, 0)::float8 ELSE {every} END"
    )


def pair_query(*, fmt: str, context: ExportContext) -> Query:
    """The query of the lines: one row per task with pairs (its id, judgments read, lines, the
    lines) in id order, of the tasks in part ``part`` of ``stripes``: ids in runs of
    ``stripe``, dealt to the parts in turn (parameters, set per connection)."""
    params = _lookups(context)
    on_task, on_judgment, on_kept = _where(context.filters, params)
    side = SIDES[fmt].format(p="p.messages::text", h="h.transcript", t="c.text")
    # Scores are integers (``rubrics.scores_validate``): ``->>`` writes them as JSON does.
    scores = _struct(
        context.axes, lambda axis: f"coalesce(j.scores -> e.cid ->> {_literal(axis)}, '0')"
    )
    flags = []
    if context.flags:
        value = _struct(
            context.flags,
            lambda flag: f"CASE WHEN j.flags ? {_literal(flag)} THEN 'true' ELSE 'false' END",
        )
        flags = [_literal('"flags": '), value, "', '"]
    outcome = []
    if context.filters.include_none_acceptable:
        outcome = [
            """CASE WHEN j.none_acceptable THEN ', "none_acceptable": true'"""
            """ ELSE ', "none_acceptable": false' END"""
        ]
    close = _joined([
        "', \"strength\": '", "to_json(j.strength)::text", "', '", *flags, "'\"rubric\": '",
        "(%(rubrics)s::jsonb -> j.rubric_id::text ->> 'label')",
        "', \"judgment_id\": \"'", "j.id::text", "'\", \"annotator\": '",
        "(%(names)s::jsonb ->> j.annotator_id::text)", *outcome, "E'}\\n'",
    ])  # fmt: skip
    opening = (
        """concat('{"prompt": ', p.messages::text, ', "chosen": ')"""
        if fmt in WITH_PROMPT
        else """'{"chosen": '"""
    )
    margin = f"""CASE WHEN pr.ga = 1 AND pr.gb = 2 AND pr.top_single AND jc.sm IS NOT NULL
        THEN jc.sm ELSE {rounded_margin("pr.x")} END"""
    transcript = ""
    if fmt == "hh_rlhf":
        transcript = """CROSS JOIN LATERAL (
            SELECT coalesce(string_agg(CASE WHEN m ->> 'role' = 'system' THEN m ->> 'content'
                ELSE concat(E'\\n\\n', CASE m ->> 'role' WHEN 'user' THEN 'Human'
                    WHEN 'assistant' THEN 'Assistant' END, ': ', m ->> 'content') END,
                '' ORDER BY i), '') AS transcript
            FROM jsonb_array_elements(p.messages) WITH ORDINALITY AS pm(m, i)) AS h"""
    task_where = " AND ".join(["lines.judged > 0", *on_task])
    judgment_where = " AND ".join(["j.task_id = t.id", *on_judgment])
    kept = " AND ".join(["TRUE", *on_kept])
    mean = _mean(context.axes)
    line = _formatted([
        "s.opening", "pr.sides[pr.a]", Text(', "rejected": '), "pr.sides[pr.b]",
        Text(', "margin": '), margin,
        Text(', "axis": ' + json_encode(context.filters.axis) + ', "chosen_completion_id": '),
        "pr.cids[pr.a]", Text(', "rejected_completion_id": '), "pr.cids[pr.b]",
        Text(', "chosen_policy": '), "pr.policies[pr.a]", Text(', "rejected_policy": '),
        "pr.policies[pr.b]", "s.place", "pr.scores[pr.a]", Text(', "rejected_scores": '),
        "pr.scores[pr.b]", Text(', "chosen_rank": '), "pr.ga::text",
        Text(', "rejected_rank": '), "pr.gb::text", "jc.close",
    ])  # fmt: skip
    sql = f"""
SELECT t.id, lines.judged::int4, lines.pairs::int4, lines.body
FROM annotation_comparisontask t
JOIN annotation_round r ON r.id = t.round_id
JOIN feedback_prompt p ON p.id = t.prompt_id
{transcript}
CROSS JOIN LATERAL (
    SELECT array_agg(tc.completion_id ORDER BY tc.position) AS ids,
           array_agg({side} ORDER BY tc.position) AS sides,
           array_agg(to_json(v.name)::text ORDER BY tc.position) AS policies,
           {opening} AS opening,
           ', "task_id": ' || t.id::text || ', "round": ' || r.number::text
               || ', "chosen_scores": ' AS place
    FROM annotation_taskcompletion tc
    JOIN feedback_completion c ON c.id = tc.completion_id
    JOIN feedback_policyversion v ON v.id = c.policy_version_id
    WHERE tc.task_id = t.id
) AS s
CROSS JOIN LATERAL (
    SELECT count(*) AS judged, coalesce(sum(cut.n) FILTER (WHERE {kept}), 0) AS pairs,
           string_agg(cut.body, '' ORDER BY j.created_at, j.id) FILTER (WHERE {kept}) AS body
    FROM annotation_judgment j
    CROSS JOIN LATERAL (
        SELECT (%(rubrics)s::jsonb -> j.rubric_id::text ->> 'w')::float8 AS width,
               %(margins)s::jsonb ->> concat(j.rubric_id, ':', j.strength) AS sm,
               {close} AS close
    ) AS jc
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, string_agg(
            {line},
            '' ORDER BY pr.ga, pr.gb, pr.a, pr.b) AS body
        FROM (
            SELECT f.*, a, b, f.gis[a] AS ga, f.gis[b] AS gb,
                   greatest(0::float8, coalesce((f.means[a] - f.means[b]) / jc.width, 0)) AS x
            FROM (
                -- A judgment's ranking flattened, best first: each completion's group, side,
                -- policy, score struct and mean score (in the order the rows come, the
                -- ranking's).
                SELECT array_agg(e.cid) AS cids, array_agg(g.gi::int) AS gis,
                       array_agg(s.sides[array_position(s.ids, e.cid::bigint)]) AS sides,
                       array_agg(s.policies[array_position(s.ids, e.cid::bigint)]) AS policies,
                       array_agg({scores}) AS scores, array_agg({mean}) AS means,
                       jsonb_array_length(j.ranking -> 0) = 1 AS top_single
                FROM jsonb_array_elements(j.ranking) WITH ORDINALITY AS g(grp, gi),
                     jsonb_array_elements_text(g.grp) AS e(cid)
            ) AS f,
            generate_series(1, cardinality(f.cids)) AS a,
            generate_series(1, cardinality(f.cids)) AS b
            WHERE f.gis[a] < f.gis[b]
            OFFSET 0
        ) AS pr
    ) AS cut
    WHERE {judgment_where}
) AS lines
WHERE {task_where} AND (t.id / %(stripe)s) %% %(stripes)s = %(part)s
ORDER BY t.id"""
    return Query(sql, params)
