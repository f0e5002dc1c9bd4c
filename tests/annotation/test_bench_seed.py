"""The export benchmark's seeder (``benchmarks/_seed.py``) writes with COPY, past the ORM and its
Python-side defaults, so a column added to a model without a database default breaks it (a round's
``priority`` did, unseen until a benchmark run). Seeding a few pairs here keeps it in step with the
migrations, and checks that it leaves what the API would: closed rounds out of the distributor."""

from __future__ import annotations

import pytest

from annotation.models import Assignment, ComparisonTask, Judgment, Round
from benchmarks._seed import OVERLAP, PAIRS_PER_JUDGMENT, K, seed_preference_pairs

from ..conftest import database_url


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_export_benchmark_seeds_the_current_schema(postgres):
    report = seed_preference_pairs(conninfo=database_url(), pairs=10 * PAIRS_PER_JUDGMENT)
    assert (report.pairs, report.judgments, report.reused) == (60, 10, False)
    assert Judgment.objects.count() == 10
    assert Assignment.objects.filter(status=Assignment.Status.SUBMITTED).count() == 10
    assert ComparisonTask.objects.count() == -(-10 // OVERLAP)
    assert all(len(t.slots.all()) == K for t in ComparisonTask.objects.all())
    assert set(Round.objects.values_list("status", "priority")) == {(Round.Status.CLOSED, 0)}
    assert not ComparisonTask.objects.filter(round_open=True).exists()
    # Asked again for as many, it finds them there and writes nothing.
    assert seed_preference_pairs(conninfo=database_url(), pairs=60).reused


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_scaling_benchmark_grows_a_round_the_distributor_serves(postgres, annotator):
    """``benchmarks/scaling.py`` grows an open round in SQL to a million tasks; its insert must
    know every column without a database default (a round's ``priority`` broke it, too), and
    the tasks it adds must be ones a lease hands out."""
    import psycopg

    from annotation.lease import lease_next
    from benchmarks.scaling import grow_round

    from ..factories import open_round

    round_ = open_round(n=2, k=3)
    Round.objects.filter(pk=round_.pk).update(priority=7)
    with psycopg.connect(database_url(), autocommit=True) as conn:
        assert grow_round(conn, round_id=round_.pk, to_tasks=5) > 0
    grown = ComparisonTask.objects.filter(round=round_).exclude(priority=0)  # only the new ones
    assert grown.count() == 3
    assert all(t.round_open and t.slots.count() == 3 for t in grown)
    # Their round's priority comes first, so a lease hands out one of them.
    leased = lease_next(annotator=annotator).leased
    assert leased is not None and leased.task_id in {t.pk for t in grown}
    assert len(leased.completions) == 3
