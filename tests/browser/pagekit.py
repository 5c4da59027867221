"""Small steps the browser tests share: send a message, find the reply, read the store."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def replies(page: Page) -> Locator:
    return page.locator("li.msg.assistant")


def last_reply(page: Page) -> Locator:
    return replies(page).last


def chat_id(page: Page) -> str:
    page.wait_for_url(re.compile(r"#/chat/"))
    return page.url.split("#/chat/", 1)[1]


def stored_chat(api: httpx.Client, cid: str) -> dict[str, Any]:
    res = api.get(f"/api/chats/{cid}")
    res.raise_for_status()
    chat: dict[str, Any] = res.json()
    return chat


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


def reply_text(reply: Locator) -> str:
    """The reply's text as rendered (Markdown turned into text, code blocks' labels left out)."""
    text: str = reply.evaluate(
        """li => [...li.querySelectorAll('.parts > .md')]
              .map(md => { const c = md.cloneNode(true);
                           c.querySelectorAll('.code-head').forEach(h => h.remove());
                           return c.innerText; }).join('')"""
    )
    return text


def words(text: str) -> list[str]:
    return text.split()


def wait_reply_longer_than(page: Page, n: int) -> int:
    """Wait until the last reply shows more than `n` characters while it still streams
    (the Stop button is up); return the length seen."""
    handle = page.wait_for_function(
        """n => {
            const li = [...document.querySelectorAll('li.msg.assistant')].at(-1);
            const stop = document.getElementById('stop');
            if (!li || stop.hidden || li.dataset.status !== 'streaming') return false;
            const len = li.querySelector('.parts').innerText.trim().length;
            return len > n ? len : false;
        }""",
        arg=n,
    )
    length: int = handle.json_value()
    return length


def wait_until_held(page: Page, held: Sized, what: str, timeout: float = 10.0) -> None:
    """Let the page run until a route handler has held a request in `held`; else fail
    with `what`. (A handler runs while the test waits inside a Playwright call.)"""
    deadline = time.monotonic() + timeout
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert held, what


def shoot(page: Page, name: str, tmp: Path) -> None:
    """A screenshot: into docs/screenshots/ when STREAMKEEP_TEST_SCREENSHOTS is set, else tmp."""
    folder = SCREENSHOTS if os.environ.get("STREAMKEEP_TEST_SCREENSHOTS") else tmp
    folder.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, page.viewport_size["height"] - 1 if page.viewport_size else 0)  # no hover
    page.screenshot(path=str(folder / f"{name}.png"))


# Reports each Content-Security-Policy violation of every page of the context.
_CSP_WATCH = """
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`));
"""


def watch_csp(context: BrowserContext) -> list[str]:
    """The list the context's Content-Security-Policy violations are appended to (the
    `securitypolicyviolation` events, and the console's reports of them)."""
    seen: list[str] = []

    def on_violation(text: str) -> None:
        seen.append(text)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            seen.append(message.text)

    context.expose_function("__cspViolation", on_violation)
    context.add_init_script(_CSP_WATCH)

    context.on("console", on_console)
    return seen
