"""The lease as one statement on PostgreSQL: ``annotation_lease``, a PL/pgSQL function that does
what ``annotation.distribution.task_next_for_annotator`` and the lease rate limit do together
(``annotation/lease.py`` calls it and says why), with ``annotation_gold_due`` for
``distribution.gold_due``. SQLite keeps the Python path: nothing to do.

Written here rather than imported from the app so the migration stays what it was when it ran;
a later change to the function is a new migration with ``CREATE OR REPLACE``.
"""

from django.db import migrations

FUNCTION = r"""
-- distribution.gold_due, in SQL: the same guards, the same draw (the first 48 bits of a SHA-256).
CREATE OR REPLACE FUNCTION annotation_gold_due(
    p_annotator integer, p_judged bigint, p_gold_judged bigint, p_rate double precision
) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_rate <= 0 THEN false
        WHEN p_gold_judged + 1 > p_rate * (p_judged + 1) + 1 THEN false
        WHEN p_gold_judged + 1 < p_rate * (p_judged + 1) THEN true
        ELSE ('x' || left(encode(sha256(convert_to('gold:' || p_annotator || ':' || p_judged,
                                                   'UTF8')), 'hex'), 12))::bit(48)::bigint
             ::double precision / 281474976710656.0::double precision < p_rate
    END
$$;

CREATE OR REPLACE FUNCTION annotation_lease(
    p_annotator integer,
    p_now timestamptz,
    p_expires timestamptz,
    p_lock bigint,
    p_key text,
    p_count integer,
    p_period double precision,
    p_at double precision,
    p_tries integer
) RETURNS TABLE (
    r_outcome text,
    r_wait double precision,
    r_assignment uuid,
    r_expires timestamptz,
    r_order jsonb,
    r_task bigint,
    r_round_number integer,
    r_rubric_id bigint,
    r_rubric_created_at timestamptz,
    r_messages jsonb,
    r_safety boolean,
    r_completion_id bigint,
    r_text text
) LANGUAGE plpgsql VOLATILE
-- The pick must walk task_open_by_priority in its order and stop at the first free task. With
-- a sort allowed, the planner may instead read every open task and sort them (estimates after a
-- round's bulk insert can make it think one row qualifies): 1.4 ms instead of 0.06 ms a pick,
-- seen in the benchmark as the first seconds of each round served slowly. A sort that remains
-- (the content's, by position) is then costed as disabled, which would cross jit_above_cost and
-- compile it, a second each time: JIT is off here too (nothing here is worth compiling).
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    v_wait double precision;
    v_tried bigint[] := '{}';
    v_task record;
    v_gold record;
    v_task_id bigint;
    v_pick_id bigint;
    v_judged bigint;
    v_gold_judged bigint;
    v_live integer;
    v_first timestamptz;
    v_order jsonb;
    v_assignment uuid;
    v_expires timestamptz;
    v_outcome text := 'none';
BEGIN
    -- Each statement below takes its own snapshot (READ COMMITTED), so once the annotator's
    -- lock is held, the next statement sees what the request that held it before committed.
    PERFORM pg_advisory_xact_lock(p_lock);

    IF p_key IS NOT NULL THEN
        IF p_count <= 0 THEN
            r_outcome := 'throttled';
            r_wait := p_period;
            RETURN NEXT;
            RETURN;
        END IF;
        SELECT h.at + p_period - p_at INTO v_wait
          FROM feedback_throttlehit h
         WHERE h."key" = p_key AND h.at > p_at - p_period
         ORDER BY h.at DESC LIMIT 1 OFFSET p_count - 1;
        IF FOUND THEN
            r_outcome := 'throttled';
            r_wait := v_wait;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- A lease held on a task of an open round comes back as it is.
    SELECT a.id, a.task_id, a.lease_expires_at, a.display_order
      INTO v_assignment, v_task_id, v_expires, v_order
      FROM annotation_assignment a
      JOIN annotation_comparisontask t ON t.id = a.task_id
      JOIN annotation_round r ON r.id = t.round_id
     WHERE a.annotator_id = p_annotator AND a.status = 'leased' AND a.lease_expires_at > p_now
       AND r.status = 'open'
     ORDER BY a.lease_expires_at LIMIT 1;
    IF FOUND THEN
        v_outcome := 'held';
    ELSE
        FOR i IN 1..p_tries LOOP
            SELECT t.id, t.overlap, t.submitted_count, t.leased_count, t.leases_expire_at,
                   t.round_id, r.seed, r.source, r.gold_count, r.gold_rate,
                   (SELECT x.id FROM annotation_assignment x
                     WHERE x.task_id = t.id AND x.annotator_id = p_annotator) AS mine
              INTO v_task
              FROM annotation_comparisontask t
              JOIN annotation_round r ON r.id = t.round_id
             WHERE r.status = 'open' AND t.round_open AND t.gold_ranking IS NULL
               AND t.submitted_count < t.overlap
               AND (t.submitted_count < t.overlap - t.leased_count OR t.leases_expire_at <= p_now)
               AND NOT EXISTS (SELECT 1 FROM annotation_assignment x
                                WHERE x.task_id = t.id AND x.annotator_id = p_annotator
                                  AND x.status IN ('submitted', 'skipped'))
               AND t.id <> ALL (v_tried)
             ORDER BY t.priority DESC, t.submitted_count DESC, t.id
             LIMIT 1
               FOR UPDATE OF t SKIP LOCKED;
            IF NOT FOUND THEN
                EXIT;
            END IF;
            v_live := v_task.leased_count;
            v_first := v_task.leases_expire_at;
            IF v_first IS NOT NULL AND v_first <= p_now THEN
                UPDATE annotation_assignment SET status = 'expired', finished_at = p_now
                 WHERE task_id = v_task.id AND status = 'leased' AND lease_expires_at <= p_now;
                SELECT count(*), min(lease_expires_at) INTO v_live, v_first
                  FROM annotation_assignment WHERE task_id = v_task.id AND status = 'leased';
                -- The exact counts, whichever task is leased below.
                UPDATE annotation_comparisontask
                   SET leased_count = v_live, leases_expire_at = v_first
                 WHERE id = v_task.id;
            END IF;
            v_pick_id := v_task.id;
            v_assignment := NULL;
            IF v_task.submitted_count + v_live < v_task.overlap THEN
                -- distribution._gold_instead: a gold task of the round, if one is due, in its
                -- place (gold is mixed into real work only, never served alone).
                IF v_task.gold_count > 0 AND v_task.gold_rate > 0 THEN
                    SELECT count(*), count(*) FILTER (WHERE g.gold_ranking IS NOT NULL)
                      INTO v_judged, v_gold_judged
                      FROM annotation_assignment a
                      JOIN annotation_comparisontask g ON g.id = a.task_id
                     WHERE a.annotator_id = p_annotator AND g.round_id = v_task.round_id
                       AND a.status = 'submitted';
                    IF annotation_gold_due(p_annotator, v_judged, v_gold_judged,
                                           v_task.gold_rate) THEN
                        SELECT g.id, g.overlap, g.submitted_count, g.leased_count,
                               g.leases_expire_at, g.round_id, v_task.seed AS seed,
                               v_task.source AS source,
                               (SELECT x.id FROM annotation_assignment x
                                 WHERE x.task_id = g.id AND x.annotator_id = p_annotator) AS mine
                          INTO v_gold
                          FROM annotation_comparisontask g
                         WHERE g.round_id = v_task.round_id AND g.gold_ranking IS NOT NULL
                           AND g.submitted_count < g.overlap - g.leased_count
                           AND NOT EXISTS (SELECT 1 FROM annotation_assignment x
                                            WHERE x.task_id = g.id
                                              AND x.annotator_id = p_annotator
                                              AND x.status <> 'expired')
                         ORDER BY g.id LIMIT 1
                           FOR UPDATE OF g SKIP LOCKED;
                        IF FOUND THEN
                            v_task := v_gold;
                            v_live := v_gold.leased_count;
                            v_first := v_gold.leases_expire_at;
                        END IF;
                    END IF;
                END IF;
                -- distribution.assignment_display_order, in SQL: a side-by-side round as
                -- stored, any other sorted by SHA-256 of a key of the round, task, annotator
                -- and completion.
                SELECT coalesce(jsonb_agg(tc.completion_id ORDER BY
                           CASE WHEN v_task.source = 'side_by_side' THEN NULL ELSE
                                sha256(convert_to('display-order:' || v_task.seed || ':'
                                       || v_task.id || ':' || p_annotator || ':'
                                       || tc.completion_id, 'UTF8')) END,
                           CASE WHEN v_task.source = 'side_by_side' THEN tc.position END,
                           tc.completion_id), '[]'::jsonb)
                  INTO v_order
                  FROM annotation_taskcompletion tc WHERE tc.task_id = v_task.id;
                IF v_task.mine IS NOT NULL THEN
                    -- This annotator's earlier lease here lapsed: the same row comes back,
                    -- unless a late submit of it committed meanwhile.
                    UPDATE annotation_assignment
                       SET status = 'leased', leased_at = p_now, lease_expires_at = p_expires,
                           display_order = v_order, finished_at = NULL
                     WHERE id = v_task.mine AND status = 'expired';
                    IF FOUND THEN
                        v_assignment := v_task.mine;
                    END IF;
                ELSE
                    v_assignment := gen_random_uuid();
                    INSERT INTO annotation_assignment
                        (id, task_id, annotator_id, status, leased_at, lease_expires_at,
                         display_order, finished_at, skip_reason)
                    VALUES (v_assignment, v_task.id, p_annotator, 'leased', p_now, p_expires,
                            v_order, NULL, '');
                END IF;
            END IF;
            IF v_assignment IS NOT NULL THEN
                UPDATE annotation_comparisontask
                   SET leased_count = v_live + 1,
                       leases_expire_at = LEAST(coalesce(v_first, p_expires), p_expires)
                 WHERE id = v_task.id;
                v_outcome := 'leased';
                v_task_id := v_task.id;
                v_expires := p_expires;
                EXIT;
            END IF;
            -- Not leased (a stale lower bound with no lapsed lease behind it, whose exact
            -- counts were stored above, or a row of this annotator's no longer lapsed): try the
            -- next candidate.
            v_tried := v_tried || v_pick_id;
        END LOOP;
    END IF;

    IF p_key IS NOT NULL THEN
        INSERT INTO feedback_throttlehit ("key", at) VALUES (p_key, p_at);
    END IF;
    IF v_outcome = 'none' THEN
        r_outcome := 'none';
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT v_outcome, NULL::double precision, v_assignment, v_expires, v_order,
               t.id, r.number, r.rubric_id, ru.created_at, p.messages, p.safety,
               tc.completion_id, c.text
          FROM annotation_comparisontask t
          JOIN annotation_round r ON r.id = t.round_id
          JOIN annotation_rubric ru ON ru.id = r.rubric_id
          JOIN feedback_prompt p ON p.id = t.prompt_id
          LEFT JOIN annotation_taskcompletion tc ON tc.task_id = t.id
          LEFT JOIN feedback_completion c ON c.id = tc.completion_id
         WHERE t.id = v_task_id
         ORDER BY tc.position;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS annotation_lease(integer, timestamptz, timestamptz, bigint, "
            "text, integer, double precision, double precision, integer)"
        )
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS annotation_gold_due(integer, bigint, bigint, "
            "double precision)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0016_round_priority"),
        ("feedback", "0007_webhooks"),
    ]

    operations = [migrations.RunPython(create, drop)]
