"""The outbox under a broker outage: a request that enqueues work while the broker is stopped
still succeeds, the work waits in the outbox, and once the broker is back the relay publishes it
and a real worker runs it exactly once. The broker is a Redis server of this test's own (started,
stopped and started again here), so the one the rest of the suite uses is never disturbed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from annotation.models import ExportJob
from feedback.models import OutboxMessage
from feedback.platform.outbox import outbox_pending_count, outbox_publish

from ..conftest import REQUIRE_SERVICES, ROOT, WORKER_COMMAND, database_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A throwaway redis-server on its own port: the broker this test may stop."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:  # readiness: the port answers PING
            assert self.process.poll() is None, "redis-server exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def queue_length(self, queue: str) -> int:
        import redis

        return redis.Redis(port=self.port).llen(queue)


@pytest.fixture
def private_broker(settings) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    broker = PrivateRedis(free_port())
    settings.CELERY_BROKER_URL = broker.url  # the outbox connects afresh on each pass
    try:
        yield broker
    finally:
        broker.stop()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_work_enqueued_while_the_broker_is_down_runs_once_when_it_returns(
    private_broker, api, researcher
):
    client = api(researcher)
    body = {"format": "judgments", "file_format": "jsonl", "filters": {}}

    # The broker is down: the request still succeeds and its work waits in the outbox.
    response = client.post("/api/v1/exports/", body, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    message = OutboxMessage.objects.get()
    assert message.task == "annotation.tasks.export_job_run" and message.args == [job_id]
    assert message.published_at is None and message.attempts == 1
    assert "Error" in message.last_error  # why it waits, for an admin reading the table
    assert outbox_publish() == 0  # a relay pass during the outage sends nothing, loses nothing
    assert outbox_pending_count() == 1

    # A request that fails validation writes no message (it rolls back with the request).
    assert client.post("/api/v1/exports/", {"format": "nope"}, format="json").status_code == 400
    assert OutboxMessage.objects.count() == 1

    # The broker returns: one relay pass publishes it, a second finds nothing left to send.
    private_broker.start()
    assert outbox_publish() == 1
    assert outbox_publish() == 0
    assert private_broker.queue_length("default") == 1
    message.refresh_from_db()
    assert message.published_at is not None and message.attempts == 3

    # A real worker on that broker runs it, once.
    env = {**os.environ, "DATABASE_URL": database_url(), "CELERY_BROKER_URL": private_broker.url}
    log = open(Path(settings.VAR_DIR) / "test-outbox-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*WORKER_COMMAND, "--loglevel=INFO"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(
            lambda: ExportJob.objects.get(pk=job_id).status == ExportJob.Status.SUCCEEDED,
            120,
            "the export job queued during the outage did not run",
        )
        job = ExportJob.objects.get(pk=job_id)
        assert job.attempts == 1  # claimed once: nothing ran it twice

        # With the broker up, a request's message is published as its transaction commits.
        again = client.post("/api/v1/exports/", body, format="json")
        assert again.status_code == 202
        sent = OutboxMessage.objects.get(args=[again.json()["id"]])
        assert sent.published_at is not None and sent.attempts == 1
        wait_for(
            lambda: ExportJob.objects.get(pk=again.json()["id"]).status == "succeeded",
            120,
            "the second export job did not run",
        )
        assert outbox_pending_count() == 0 and private_broker.queue_length("default") == 0
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
