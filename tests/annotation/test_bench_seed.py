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
