"""The page's model picker shows what a pass-through provider serves: a user with Ollama
or vLLM behind `OPENAI_BASE_URL` picks their own model and chats with it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.pagekit import chat_id, last_reply, send, stored_chat
from tests.browser.procs import MODEL, clean_env, stop_process, wait_ready, write_config
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSED = "openai/fake-model"  # what the fake provider's own /models lists, as `openai/...`


@pytest.fixture(scope="module")
def passing_server(fake_provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamkeep serve` with the usual config plus `OPENAI_BASE_URL` (no model list)."""
    home = tmp_path_factory.mktemp("passing")
    config = write_config(home, fake_provider)
    port = free_port()
    env = clean_env(
        STREAMKEEP_CONFIG=str(config),
        STREAMKEEP_DATA_DIR=str(home / "data"),
        OPENAI_BASE_URL=fake_provider,
    )
    with (home / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, home / "server.log")
        yield url
    finally:
        stop_process(proc)


def test_the_picker_offers_the_providers_own_models(browser: Browser, passing_server: str) -> None:
    context = browser.new_context(base_url=passing_server)
    page = context.new_page()
    page.goto("/")
    picker = page.get_by_role("combobox", name="Model")
    expect(picker.locator("option")).to_have_text([PASSED, MODEL])
    picker.select_option(PASSED)
    send(page, "Which model is this? [[text='The one you picked.']]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    with httpx.Client(base_url=passing_server, timeout=30) as api:
        chat = stored_chat(api, chat_id(page))
    assert chat["model"] == PASSED
    assert chat["messages"][-1]["model"] == PASSED
    context.close()
