"""The annotation API benchmark's baseline: the platform's routes, plus two minimal Django views
that each make one indexed query, served by the same gunicorn through the same middleware.

A baseline loop is a read (``SELECT`` one task by primary key, like a lease's lookup) and a write
(``UPDATE`` one task by primary key, like a submit's counter), so its loops per second are the
framework's ceiling for two requests that each touch the database once; the platform's lease and
submit do the real work (locks, assignment rows, validation, the judgment) on top.
"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from feedback.urls import urlpatterns as platform_urlpatterns


@csrf_exempt
def baseline_read(request: HttpRequest, task_id: int) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, submitted_count FROM annotation_comparisontask WHERE id = %s", [task_id]
        )
        row = cursor.fetchone()
    return JsonResponse({"id": row[0] if row else None, "submitted": row[1] if row else None})


@csrf_exempt
def baseline_write(request: HttpRequest, task_id: int) -> JsonResponse:
    with connection.cursor() as cursor:
        # Writes the value it has (a real write, with WAL and a new row version, that leaves the
        # task as it was).
        cursor.execute(
            "UPDATE annotation_comparisontask SET submitted_count = submitted_count WHERE id = %s",
            [task_id],
        )
        updated = cursor.rowcount
    return JsonResponse({"updated": updated})


urlpatterns = [
    *platform_urlpatterns,
    path("bench/baseline/read/<int:task_id>/", baseline_read),
    path("bench/baseline/write/<int:task_id>/", baseline_write),
]
