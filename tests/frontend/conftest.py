"""Browser fixtures: Debian's Chromium driven by Playwright, against the live test server.

Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make to set
up and check data are ordinary synchronous calls, so Django's async-safety guard is lifted here
(the approach Django's and Playwright's docs give for this combination).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from ..conftest import service_missing

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 30_000
expect.set_options(timeout=PAGE_TIMEOUT_MS)
# What a worker job may take: load the tiny model, train a few steps, compare two versions, on
# a loaded 2-core machine (CI beside other suites). Every wait on it is for a condition (a job's
# result, a badge on a page), so a fast machine never waits this long.
JOB_TIMEOUT_S = 600
JOB_TIMEOUT_MS = JOB_TIMEOUT_S * 1000
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_path() -> str | None:
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        service_missing("no Chromium found (make test installs Debian's chromium when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    """A fresh browser context at 1280 by 800; any page error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def on_console(message: Any) -> None:
        # A 4xx answer or a cut connection is logged by the browser; the tests that cause them
        # check how the page copes. Script errors, CSP refusals and 5xx answers fail the test.
        text = message.text
        expected = text.startswith("Failed to load resource") and not re.search(
            r"status of 5\d\d", text
        )
        if message.type == "error" and not expected:
            errors.append(text)

    page.on("console", on_console)
    # Generous, since a loaded 2-core machine (CI beside a training run) can take seconds to
    # paint; every wait is still on a condition, so a fast machine never waits this long.
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    context.close()
    server_settled()
    assert errors == [], errors


def server_settled(timeout_s: float = 15.0) -> None:
    """Until no other session of the test database is running a statement or holds a
    transaction open (at most ``timeout_s``). The live server may still be answering the last
    request the closed browser sent, and the flush after the test takes every table's lock in
    turn: with that request holding one table and wanting another, PostgreSQL broke the
    deadlock by failing the flush (seen in CI), and the next test found the last one's rows."""
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time, the flush waits its turn
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.02)  # the condition is polled; nothing to wait on otherwise


def signed_in(page: Any, username: str, password: str = "pw-for-tests") -> Any:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
    return page


@pytest.fixture
def sign_in(page: Any) -> Callable[[str, str], Any]:
    def go(username: str, password: str = "pw-for-tests") -> Any:
        return signed_in(page, username, password)

    return go


@pytest.fixture
def sign_in_elsewhere(browser: Any, live_server: Any) -> Iterator[Callable[[str], Any]]:
    """Another person's browser: a page of its own context, signed in as ``username``; for a
    test in which two people act (an admin changes something, an annotator sees it)."""
    contexts: list[Any] = []

    def go(username: str) -> Any:
        contexts.append(browser.new_context(base_url=live_server.url))
        return signed_in(contexts[-1].new_page(), username)

    yield go
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(page: Any) -> Callable[[str], Path]:
    """Save a screenshot under var/screenshots, and into docs/ when UPDATE_SCREENSHOTS=1; of
    the test's page, or of another one (``of=``, a page in a context the test made itself)."""

    def take(name: str, of: Any = None, **options: Any) -> Path:
        folder = (
            DOCS_SCREENSHOTS
            if os.environ.get("UPDATE_SCREENSHOTS") == "1"
            else Path(settings.VAR_DIR) / "screenshots"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        (of or page).screenshot(path=str(path), **options)
        return path

    return take


def refresh_of(page: Any) -> Any:
    """The meta refresh that the Policies, training-run and round pages carry while a job is in
    flight: they reload themselves every 3 seconds, so a test that types into such a page or
    reloads it may be overtaken by the page's own reload."""
    return page.locator('meta[http-equiv="refresh"]')


def wait_until_settled(page: Any, timeout_ms: int = PAGE_TIMEOUT_MS) -> None:
    """Wait until the page no longer refreshes itself (nothing is in flight any more), so what
    it shows is final and a form on it keeps what is typed."""
    expect(refresh_of(page)).to_have_count(0, timeout=timeout_ms)


def page_html(page: Any) -> str:
    """The HTML of the page as one document drew it. A self-refreshing page may be replaced
    while it is read (Playwright then says it is navigating): read the next one instead. Bounded
    by the page timeout, like every other wait here."""
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while True:
        try:
            page.wait_for_load_state("domcontentloaded")
            return page.content()
        except PlaywrightError as error:
            if "navigating" not in str(error) or time.monotonic() > deadline:
                raise
