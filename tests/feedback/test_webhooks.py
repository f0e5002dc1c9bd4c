"""Webhooks through the whole path: an admin registers one through the API, an event (a test
ping, a round closed) writes a delivery with an outbox message, and a real Celery worker posts
it, signed, to a real HTTP receiver on loopback; a failed attempt is retried after its backoff,
and the delivery log says what happened.

The worker is this module's own, on a queue of its own, started with private targets allowed
(the receiver is on loopback); the suite's worker never sees these deliveries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone

from annotation.exports.jobs import export_job_create, export_job_run
from feedback.models import Deployment, Webhook, WebhookDelivery
from feedback.platform.signals import job_finished
from feedback.platform.webhooks.services import (
    MAX_ATTEMPTS,
    retry_delay,
    webhook_delivery_attempt,
    webhook_retries_enqueue,
)
from tests.factories import PolicyVersionFactory, open_round

from ..conftest import ROOT, SERVICE_START_S, WORKER_COMMAND, database_url
from .webhook_receiver import receiver, signature_valid  # noqa: F401 (a fixture)

WEBHOOKS = "/api/v1/webhooks/"
QUEUE = "webhooks-test"
NAME = f"webhooks-test@{socket.gethostname()}"


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = 60) -> Any:
    """Poll a database condition until it holds (the worker is another process)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def webhook_worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    from feedback.celery import app

    with django_db_blocker.unblock():
        url = database_url()
    command = [a if not a.startswith("--queues=") else f"--queues={QUEUE}" for a in WORKER_COMMAND]
    log_path = Path(django_settings.VAR_DIR) / "test-worker-webhooks.log"
    log = open(log_path, "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*command, "-n", NAME, "--loglevel=INFO"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "DATABASE_URL": url, "WEBHOOK_ALLOW_PRIVATE_TARGETS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + SERVICE_START_S
    while not app.control.ping(destination=[NAME], timeout=0.5):
        assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "the webhook worker did not answer"
    yield
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


@pytest.fixture
def deliveries_here(settings: Any) -> None:
    """Register loopback receivers, and send this test's deliveries to this module's worker."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    settings.WEBHOOK_QUEUE = QUEUE


def register(client: Any, url: str, events: list[str]) -> dict[str, Any]:
    response = client.post(WEBHOOKS, {"url": url, "events": events}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["secret"].startswith("whsec_")
    return created


def settled(delivery_id: int, *statuses: str) -> Callable[[], WebhookDelivery | None]:
    def check() -> WebhookDelivery | None:
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        # The worker reads WEBHOOK_ALLOW_PRIVATE_TARGETS from its environment (settings.py).
        assert not delivery.last_error.startswith("Refused"), delivery.last_error
        return delivery if delivery.status in statuses else None

    return check


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_ping_is_delivered_signed_and_retried_after_a_failure(
    api,
    admin,
    receiver,  # noqa: F811
    webhook_worker,
    deliveries_here,
):
    client = api(admin)
    hook = register(client, f"{receiver.url}/hooks", ["training_run.finished"])
    # The secret is shown once: the list names it only by its first characters.
    listed = client.get(WEBHOOKS).json()
    assert "secret" not in listed[0] and hook["secret"].startswith(listed[0]["secret_hint"][:-1])
    receiver.answer("/hooks", 500)  # the receiver is down for the first attempt

    ping = client.post(f"{WEBHOOKS}{hook['id']}/ping/")
    assert ping.status_code == 202, ping.json()
    delivery_id = ping.json()["id"]
    failed = wait_for(settled(delivery_id, "retrying"), what="the first attempt")
    assert (failed.attempts, failed.last_status_code) == (1, 500)
    assert failed.next_attempt_at >= timezone.now() + retry_delay(1) - timedelta(seconds=5)

    # The relay's pass once the backoff is over (run here, at that time, rather than waited for).
    assert webhook_retries_enqueue(now=timezone.now()) == 0  # not due yet
    assert webhook_retries_enqueue(now=failed.next_attempt_at) == 1
    delivered = wait_for(settled(delivery_id, "delivered"), what="the retry")
    assert (delivered.attempts, delivered.last_status_code) == (2, 200)

    first, second = receiver.requests
    assert first.body == second.body  # the same event, signed afresh
    for request in (first, second):
        assert signature_valid(
            hook["secret"], request.body, request.headers["X-Feedback-Signature"]
        )
        assert not signature_valid(
            "whsec_other", request.body, request.headers["X-Feedback-Signature"]
        )
        assert request.headers["X-Feedback-Event"] == "ping"
        assert request.headers["X-Feedback-Delivery"] == str(delivery_id)
        assert request.headers["Content-Type"] == "application/json"
    body = first.json
    assert body["event"] == "ping" and body["id"] == str(delivered.event_id)
    assert body["data"]["webhook_id"] == hook["id"]

    log = client.get(f"{WEBHOOKS}deliveries/", {"webhook": hook["id"]}).json()
    assert [(d["id"], d["status"], d["attempts"]) for d in log] == [(delivery_id, "delivered", 2)]
    assert client.get(f"{WEBHOOKS}deliveries/", {"nope": 1}).status_code == 400


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_closing_a_round_is_delivered_to_the_webhooks_that_subscribed(
    api,
    admin,
    receiver,  # noqa: F811
    webhook_worker,
    deliveries_here,
):
    client = api(admin)
    hook = register(client, f"{receiver.url}/rounds", ["round.completed"])
    register(client, f"{receiver.url}/gates", ["gate.decided"])
    round_ = open_round(n=2, k=2)

    assert client.post(f"/api/v1/rounds/{round_.pk}/close/").status_code == 200
    delivery = WebhookDelivery.objects.get(event="round.completed")
    wait_for(settled(delivery.pk, "delivered"), what="the round's event")
    (request,) = receiver.requests
    assert request.path == "/rounds"
    assert signature_valid(hook["secret"], request.body, request.headers["X-Feedback-Signature"])
    assert request.json["data"] == {"round_id": round_.pk, "api": f"/api/v1/rounds/{round_.pk}/"}
    # Closing it again changes nothing and tells no one again.
    assert client.post(f"/api/v1/rounds/{round_.pk}/close/").status_code == 200
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db  # no commit: nothing is published, the mapping is the point
def test_job_events_reach_only_their_subscribers_and_deleting_a_webhook_ends_them(
    api, admin, deliveries_here, django_capture_on_commit_callbacks
):
    client = api(admin)
    gates = register(client, "http://127.0.0.1:9/gates", ["gate.decided"])
    register(client, "http://127.0.0.1:9/runs", ["training_run.finished"])

    job_finished.send(sender=None, kind="gate", object_id=7)
    (delivery,) = WebhookDelivery.objects.all()
    assert (delivery.webhook_id, delivery.event) == (gates["id"], "gate.decided")
    assert delivery.payload["data"] == {"gate_id": 7, "api": "/api/v1/gates/7/"}
    job_finished.send(sender=None, kind="round", object_id=3)  # generation: not an event
    assert WebhookDelivery.objects.count() == 1

    # Serving switched back: the deployment says so, by name (a failed one changed nothing).
    policies = register(client, "http://127.0.0.1:9/policies", ["policy.rolled_back"])
    old, new = PolicyVersionFactory(status="active"), PolicyVersionFactory(status="retired")
    done = Deployment.objects.create(
        policy_version=old, previous=new, action="rollback", backend="openai", status="done",
        finished_at=timezone.now(),
    )  # fmt: skip
    failed = Deployment.objects.create(policy_version=new, backend="openai", status="failed")
    job_finished.send(sender=None, kind="deployment", object_id=failed.pk)
    job_finished.send(sender=None, kind="deployment", object_id=done.pk)
    rolled_back = WebhookDelivery.objects.get(webhook_id=policies["id"])
    assert rolled_back.event == "policy.rolled_back"
    assert rolled_back.payload["data"]["policy_version"] == {"id": old.pk, "name": old.name}
    assert rolled_back.payload["data"]["previous"] == {"id": new.pk, "name": new.name}
    # An export job that writes its file tells the webhooks subscribed to export.ready.
    exports = register(client, "http://127.0.0.1:9/exports", ["export.ready"])
    job = export_job_create(fmt="trl", file_format="jsonl", filters={})
    with django_capture_on_commit_callbacks(execute=True):
        assert export_job_run(job_id=job.pk).status == "succeeded"
    ready = WebhookDelivery.objects.get(webhook_id=exports["id"])
    assert ready.event == "export.ready" and ready.payload["data"]["export_job_id"] == str(job.pk)
    assert WebhookDelivery.objects.count() == 3

    assert client.delete(f"{WEBHOOKS}{gates['id']}/").status_code == 204
    assert client.delete(f"{WEBHOOKS}{gates['id']}/").status_code == 404
    assert WebhookDelivery.objects.filter(webhook_id=gates["id"]).count() == 0
    job_finished.send(sender=None, kind="gate", object_id=8)
    assert WebhookDelivery.objects.filter(event="gate.decided").count() == 0


@pytest.mark.django_db
def test_the_last_attempt_that_fails_gives_up(api, admin, receiver, deliveries_here):  # noqa: F811
    """The attempt itself, run here: after MAX_ATTEMPTS the delivery is failed for good."""
    client = api(admin)
    hook = register(client, f"{receiver.url}/down", ["gate.decided"])
    receiver.answer("/down", 503)
    delivery_id = client.post(f"{WEBHOOKS}{hook['id']}/ping/").json()["id"]
    WebhookDelivery.objects.filter(pk=delivery_id).update(attempts=MAX_ATTEMPTS - 1)

    assert webhook_delivery_attempt(delivery_id=delivery_id) == "failed"
    assert webhook_delivery_attempt(delivery_id=delivery_id) == "failed"  # twice: a no-op
    failed = WebhookDelivery.objects.get(pk=delivery_id)
    assert (failed.attempts, failed.last_status_code, failed.next_attempt_at) == (
        MAX_ATTEMPTS, 503, None,
    )  # fmt: skip
    assert len(receiver.requests) == 1
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3)] == [30, 120, 480]
    assert json.loads(receiver.requests[0].body)["event"] == "ping"


@pytest.mark.django_db
def test_an_admin_registers_pings_and_reads_the_log_on_the_page(
    admin,
    receiver,  # noqa: F811
    deliveries_here,
):
    page = Client()
    page.force_login(admin)
    form = {"url": f"{receiver.url}/page", "events": ["round.completed"], "description": "ops"}
    shown = page.post("/manage/webhooks/", form, follow=True).content.decode()
    hook = Webhook.objects.get()
    assert hook.secret in shown  # the signing secret, this once
    assert hook.secret not in page.get("/manage/webhooks/").content.decode()
    metadata = {"url": "http://169.254.169.254/latest/", "events": ["round.completed"]}
    refused = page.post("/manage/webhooks/", metadata, follow=True).content.decode()
    assert "169.254.169.254" in refused and Webhook.objects.count() == 1

    page.post(f"/manage/webhooks/{hook.pk}/ping/")
    (delivery,) = WebhookDelivery.objects.all()
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "delivered"
    log = page.get("/manage/webhooks/").content.decode()
    assert '<span class="badge open">delivered</span>' in log and "<code>ping</code>" in log
    assert receiver.requests[0].path == "/page"
