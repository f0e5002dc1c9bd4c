"""Signals between the apps, so that the core never imports what builds on it.

``job_finished`` is sent by a Celery task when its job ended (whatever the outcome), with
``kind`` (``training_run``, ``gate``, ``deployment``, ``round``) and ``object_id``.
``judgment_recorded`` is sent after a new judgment is committed, with ``round_id``.
Automatic rounds (``training.automation``) listen to both.
"""

from django.dispatch import Signal

job_finished = Signal()
judgment_recorded = Signal()
