"""Personas (admin, researcher, annotators, outsider), API clients that sign in with a token the
way a script does, and the service fixtures: PostgreSQL and a real Celery worker process."""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback.platform.roles import Role

from .factories import UserFactory

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"
# Nothing in the tests may reach a model hub: a missing model fails at once instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
# One solo worker on every queue, without the cluster chatter a single test worker does not need.
WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "feedback", "worker", "--pool=solo",
    "--queues=default,generation,training", "--without-heartbeat", "--without-gossip",
    "--without-mingle",
]  # fmt: skip


def service_missing(reason: str) -> None:
    """Skip a test whose service is absent; under REQUIRE_SERVICES=1, fail it instead."""
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """Personas are made by the hundred and Django's password hash costs ~0.25 s each: hash
    new ones with MD5, as Django's testing docs advise. The real hashers stay in the list, so a
    password that a server process (the demo, gunicorn) hashed still verifies here."""
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]


@pytest.fixture(autouse=True)
def default_rubric_after_flush(request: pytest.FixtureRequest) -> None:
    """Transactional tests (and live_server's) empty every table after themselves, the
    migrations' data with them. In a serial run pytest-django runs them last, but a parallel
    worker takes whole files in turn, so any test may follow one: every test that uses the
    database finds the default rubric the way its migration made it (one query when it is
    there; inside an ordinary test's transaction, so rolled back with it)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
    elif {"transactional_db", "live_server"} & set(request.fixturenames):
        request.getfixturevalue("transactional_db")
    elif "db" in request.fixturenames:
        request.getfixturevalue("db")
    else:
        return
    migration = importlib.import_module("annotation.migrations.0002_default_rubric")
    migration.create(django_apps, None)


@pytest.fixture
def postgres(db: None) -> None:
    if connection.vendor != "postgresql":
        service_missing("this test needs PostgreSQL (set DATABASE_URL)")


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    def make(role: Role | None = None, **kwargs: Any) -> Any:
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture
def admin(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.ADMIN, username="admin")


@pytest.fixture
def researcher(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.RESEARCHER, username="researcher")


@pytest.fixture
def annotator(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.ANNOTATOR, username="ann1")


@pytest.fixture
def annotator2(make_user: Callable[..., Any]) -> Any:
    return make_user(Role.ANNOTATOR, username="ann2")


@pytest.fixture
def outsider(make_user: Callable[..., Any]) -> Any:
    return make_user(None, username="outsider")


def client_for(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api() -> Callable[[Any | None], APIClient]:
    return client_for


def database_url() -> str:
    """A URL for the test database this session is using, for processes we start."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


# How long a helper process (a model server, a worker) may take to start on a loaded machine.
SERVICE_START_S = 600


@pytest.fixture(scope="session")
def transformers_serve_started(
    tiny_model_path: str,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real `transformers serve` process on the tiny model (an OpenAI-compatible server),
    started but not yet waited for: the worker starts beside it, so the two imports of torch
    and transformers overlap instead of following each other."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = str(Path(settings.ARTIFACTS_DIR) / tiny_model_path)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "transformers"), "serve", model,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield server, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


def _serve_ready(server: subprocess.Popen[bytes], url: str) -> None:
    """Readiness: the port accepts, or the server died, or the deadline passed. Generous: on a
    loaded 2-core machine importing transformers alone can take minutes."""
    import socket
    import time

    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + SERVICE_START_S
    while True:
        assert server.poll() is None, "transformers serve exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "transformers serve did not start"
            time.sleep(0.2)


@pytest.fixture(scope="session")
def transformers_serve(transformers_serve_started: tuple[subprocess.Popen[bytes], str]) -> str:
    """The session's `transformers serve`, once it accepts connections; its URL."""
    server, url = transformers_serve_started
    _serve_ready(server, url)
    return url


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None,
    django_db_blocker: Any,
    transformers_serve_started: tuple[subprocess.Popen[bytes], str],
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` process on the test database and the configured broker; its
    ``openai`` backend talks to the session's `transformers serve`."""
    with django_db_blocker.unblock():
        url = database_url()
    if REQUIRE_SERVICES and not os.environ.get("CELERY_BROKER_URL", "").startswith(
        ("redis://", "amqp://")
    ):
        pytest.fail("REQUIRE_SERVICES=1 but CELERY_BROKER_URL names no Redis or RabbitMQ broker")
    server, serve_url = transformers_serve_started
    env = {**os.environ, "DATABASE_URL": url, "OPENAI_BASE_URL": serve_url}
    log = open(Path(settings.VAR_DIR) / "test-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [*WORKER_COMMAND, "--loglevel=INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _worker_ready(worker, Path(settings.VAR_DIR) / "test-worker.log")
    _serve_ready(server, serve_url)
    yield worker
    worker.terminate()
    worker.wait(timeout=30)
    log.close()


def _worker_ready(worker: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the worker answers a ping, so no test's job timeout has to cover the
    worker's start (minutes on a loaded machine); fail with its log's tail if it died."""
    import time

    from feedback.celery import app

    deadline = time.monotonic() + SERVICE_START_S
    while not app.control.ping(timeout=1):
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        assert worker.poll() is None, f"the celery worker exited:\n{tail}"
        assert time.monotonic() < deadline, f"the celery worker did not answer:\n{tail}"


# A smaller recipe than the product's: the same code path, built once per machine and reused
# (the build is deterministic, so a cached copy is the model this recipe makes).
@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The tiny model (the demo's recipe, so the loop learns as it does there), under
    ARTIFACTS_DIR so a worker process finds it too; a relative path. Built once, then reused
    until its recipe or the synthetic task changes."""
    from feedback.serving.tiny_model import TinyRecipe, build_tiny_model, tiny_model_current

    relative = "models/tiny-llama-test"
    output = Path(settings.ARTIFACTS_DIR) / relative
    recipe = TinyRecipe()
    if tiny_model_current(output, recipe):
        return relative
    shared = os.environ.get("SHARED_VAR_DIR")  # parallel sessions (tests/parallel.py)
    if not shared:
        build_tiny_model(output, recipe, progress=False)
        return relative
    # One session builds it, under a lock; every session copies it into its own artifacts.
    cached = Path(shared) / "tiny-model-cache" / relative
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tiny_model_current(cached, recipe):
            build_tiny_model(cached, recipe, progress=False)
    shutil.rmtree(output, ignore_errors=True)
    shutil.copytree(cached, output)
    return relative


@pytest.fixture
def tiny_policy(db: None, tiny_model_path: str) -> Any:
    from feedback.serving.policies import policy_register

    return policy_register(name="tiny-v0", base_model=tiny_model_path, activate_if_none=True)


# The files that take longest (each a loop of training runs in a worker), measured with
# --durations. Run in parallel (tests/parallel.py), a process takes whole files in collection
# order; these go first, so that the short files fill in around them instead of one process
# finishing alone on the longest file at the end.
LONGEST_FILES = (
    "tests/training/test_automation.py",
    "tests/training/test_simulate.py",
    "tests/training/test_reward_runs.py",
    "tests/frontend/test_pages.py",
    "tests/faults/test_infra_faults.py",
    "tests/feedback/test_tiny_model.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (a stable sort: pytest-django's order stays within a file);
    then the GPU skips."""
    rank = {path: i for i, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
    _gpu_skips(items)


def _gpu_skips(items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip without a CUDA device, and under REQUIRE_SERVICES=1 as well:
    CI has no GPU, so such a test runs only where one is (a lent GPU machine, by hand)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return  # no torch import for a run without GPU tests
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
        for item in gpu_tests:
            item.add_marker(skip)
