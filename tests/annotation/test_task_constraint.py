"""The database itself refuses to over-assign a task: the CHECK constraint
``task_never_over_assigned`` (judgments submitted plus leases held never exceed the overlap) holds
whatever code writes the counters, on SQLite as on PostgreSQL, so a wrong code path fails loudly
instead of handing a task out once too often."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from annotation.models import ComparisonTask
from feedback.platform.roles import Role

from ..factories import open_round
from .helpers import lease, submit_url, valid_body


def test_the_database_refuses_more_leases_and_judgments_than_the_overlap(
    api, annotator, annotator2, make_user
):
    task = ComparisonTask.objects.get(round=open_round(n=1, k=3, overlap=2))
    first = lease(api(annotator))
    assert lease(api(annotator2)) is not None
    submitted = api(annotator).post(
        submit_url(first["assignment"]), valid_body(first), format="json"
    )
    assert submitted.status_code == 200
    task.refresh_from_db()
    assert (task.submitted_count, task.leased_count) == (1, 1)  # both slots taken
    # The distributor says so too: a third annotator gets nothing.
    assert lease(api(make_user(Role.ANNOTATOR, username="ann3"))) is None

    # What a wrong code path would write: one more lease, a judgment counted without releasing
    # its lease, an overlap lowered under what the task holds. The database refuses each, and
    # the counters stay as they were.
    for change in (
        {"leased_count": F("leased_count") + 1},
        {"submitted_count": F("submitted_count") + 1},
        {"overlap": 1},
    ):
        with pytest.raises(IntegrityError, match="task_never_over_assigned"), transaction.atomic():
            ComparisonTask.objects.filter(pk=task.pk).update(**change)
    task.refresh_from_db()
    assert (task.overlap, task.submitted_count, task.leased_count) == (2, 1, 1)

    # Django's model validation states the same rule in words.
    task.leased_count = 2
    with pytest.raises(ValidationError, match="cannot hold more leases and judgments than"):
        task.validate_constraints()
