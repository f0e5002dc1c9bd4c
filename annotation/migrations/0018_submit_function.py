"""The submit's fast path as one statement on PostgreSQL: ``annotation_submit``, a PL/pgSQL
function that does what ``annotation.judgments._judgment_store_fast`` does in a transaction
(``annotation/judgments.py`` calls it and says why). SQLite keeps the Python statements.

Written here rather than imported from the app so the migration stays what it was when it ran;
a later change to the function is a new migration with ``CREATE OR REPLACE``.
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION annotation_submit(
    p_now timestamptz,
    p_id uuid,
    p_assignment uuid,
    p_task bigint,
    p_annotator integer,
    p_rubric bigint,
    p_ranking jsonb,
    p_scores jsonb,
    p_strength text,
    p_flags jsonb,
    p_rationale text,
    p_time_spent_ms integer,
    p_display_order jsonb,
    p_body_sha256 text,
    p_none_acceptable boolean
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- The task's row first: the lock order every slot change uses. A live lease holds a slot.
    PERFORM 1 FROM annotation_comparisontask WHERE id = p_task AND leased_count > 0 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- A statement of its own, so its snapshot is taken after the lock: a concurrent resubmit
    -- of the same assignment, committed meanwhile, is seen, and this one goes the general way.
    UPDATE annotation_assignment SET status = 'submitted', finished_at = p_now
     WHERE id = p_assignment AND status = 'leased' AND lease_expires_at > p_now;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE annotation_comparisontask
       SET leased_count = leased_count - 1, submitted_count = submitted_count + 1,
           leases_expire_at = CASE WHEN leased_count = 1 THEN NULL ELSE leases_expire_at END
     WHERE id = p_task;
    INSERT INTO annotation_judgment
        (id, assignment_id, task_id, annotator_id, rubric_id, ranking, scores, strength, flags,
         rationale, time_spent_ms, display_order, body_sha256, created_at, none_acceptable)
    VALUES (p_id, p_assignment, p_task, p_annotator, p_rubric, p_ranking, p_scores, p_strength,
            p_flags, p_rationale, p_time_spent_ms, p_display_order, p_body_sha256, p_now,
            p_none_acceptable);
    RETURN true;
END
$$;
"""

SIGNATURE = (
    "annotation_submit(timestamptz, uuid, uuid, bigint, integer, bigint, jsonb, jsonb, text, "
    "jsonb, text, integer, jsonb, text, boolean)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")


class Migration(migrations.Migration):
    dependencies = [("annotation", "0017_lease_function")]

    operations = [migrations.RunPython(create, drop)]
