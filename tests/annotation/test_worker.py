"""The Celery wiring, end to end: a real worker process on the real broker runs the lease sweep
against the test database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, ComparisonTask
from annotation.tasks import leases_expire

from ..factories import open_round
from .helpers import lease


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_worker_process_returns_lapsed_leases_to_the_pool(celery_worker_process, api, annotator):
    open_round(n=2, overlap=1)
    held = lease(api(annotator))
    past = timezone.now() - timedelta(minutes=1)
    Assignment.objects.filter(pk=held["assignment"]).update(lease_expires_at=past)
    ComparisonTask.objects.filter(pk=held["task"]).update(leases_expire_at=past)

    result = leases_expire.delay()
    assert result.get(timeout=600) == 1
    assert Assignment.objects.get(pk=held["assignment"]).status == Assignment.Status.EXPIRED
    assert ComparisonTask.objects.get(pk=held["task"]).leased_count == 0
    assert celery_worker_process.poll() is None
