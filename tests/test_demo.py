"""The embedded default, as `make demo` runs it: SQLite under var/, the filesystem broker, the demo
seed, gunicorn and a worker; then a user's first steps over HTTP with curl-like calls."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from .conftest import WORKER_COMMAND

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "ARTIFACTS_DIR"}
    }
    env["VAR_DIR"] = str(var_dir)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, *, token: str | None = None, body: object = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(request, data=data, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    """Readiness: connect until the server accepts (or it died, or the deadline passed)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the server did not start listening")


def test_demo_serves_and_a_new_user_can_lease_submit_and_export(tmp_path, tiny_model_path):
    env = embedded_env(tmp_path)
    # The session's tiny model has the demo's recipe and the build is deterministic, so a copy
    # is the model `seed_demo` would build; building it again would cost a minute of the suite.
    # seed_demo still registers it and writes the demo's round with it.
    shutil.copytree(
        Path(settings.ARTIFACTS_DIR) / tiny_model_path,
        tmp_path / "artifacts" / settings.TINY_MODEL_DIR,
    )
    manage(env, "migrate", "--noinput")
    seeded = manage(env, "seed_demo")
    assert "round 1:" in seeded and "written by tiny-llama-v0" in seeded
    assert (tmp_path / "feedback.sqlite3").exists()

    port = free_port()
    web = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "feedback.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        WORKER_COMMAND, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, web)
        base = f"http://127.0.0.1:{port}"
        status, body = call(
            f"{base}/api/v1/auth/token/", body={"username": "annotator1", "password": "demo"}
        )
        assert status == 200
        token = json.loads(body)["token"]
        status, body = call(f"{base}/api/v1/tasks/next/", token=token, body={})
        assert status == 200
        task = json.loads(body)
        ids = [c["id"] for c in task["completions"]]
        judgment = {
            "ranking": [[ids[0]], [ids[1]], [ids[2]]],
            "scores": {str(cid): {"helpful": 5, "honest": 5, "harmless": 5} for cid in ids},
            "strength": "slightly_better",
            "time_spent_ms": 4000,
        }
        status, body = call(
            f"{base}/api/v1/assignments/{task['assignment']}/submit/", token=token, body=judgment
        )
        assert status == 200, body

        status, body = call(
            f"{base}/api/v1/auth/token/", body={"username": "researcher", "password": "demo"}
        )
        status, body = call(
            f"{base}/api/v1/exports/preferences/?format=trl", token=json.loads(body)["token"]
        )
        assert status == 200
        assert len(body.decode().splitlines()) == 3

        status, body = call(f"{base}/login/")
        assert status == 200 and b"Sign in" in body

        # The worker on the filesystem broker answers a real task.
        out = manage(
            env,
            "shell",
            "-c",
            "from annotation.tasks import leases_expire; print(leases_expire.delay().get(timeout=120))",
        )
        assert out.strip().splitlines()[-1] == "0"
    finally:
        for process in (web, worker):
            process.terminate()
            process.wait(timeout=30)
