"""Real parts for the browser tests: the fake provider and `streamkeep serve` as
subprocesses on loopback, and Debian's Chromium driven by Playwright's sync API.

Everything runs in other processes (or Playwright's own thread), so no test here shares
pytest-asyncio's event loop. The server is shared by the session; each test opens its own
chats, so tests stay independent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.pagekit import watch_csp
from tests.browser.procs import ROOT, clean_env, launch_server, stop_process
from tests.conftest import IN_CI, free_port

CHROMIUM = os.environ.get("STREAMKEEP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Replies stream for several seconds on a busy machine; conditions are awaited, not timed.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="package")
def fake_provider() -> Iterator[str]:
    """The fake OpenAI-compatible provider; yields its base URL (…/v1)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", "0"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http"):
        stop_process(proc)
        pytest.fail(f"the fake provider did not start (said {base_url!r})")
    yield base_url
    stop_process(proc)


@pytest.fixture(scope="package")
def server(fake_provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamkeep serve` with a temporary data dir and the fake provider; yields its URL."""
    port = free_port()
    proc = launch_server(tmp_path_factory.mktemp("streamkeep"), fake_provider, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def open_browser() -> Iterator[Browser]:
    """Chromium, for a fixture to yield from. Playwright's sync API keeps an event loop
    running in the main thread while it is open, and pytest-asyncio cannot start loops
    for later tests: such a fixture must end before any async test runs (package scope
    here; module scope for a file outside this package)."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        if IN_CI:
            pytest.fail(f"no Chromium at {CHROMIUM}; .ci/run should have installed it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as pw:
        # launch() gives every browser a fresh temporary profile.
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    yield from open_browser()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 820})
    csp_violations = watch_csp(context)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()
    # Whatever a test did, the page never tripped its own Content-Security-Policy.
    assert csp_violations == []


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the same server, to compare the page with what is stored."""
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client
