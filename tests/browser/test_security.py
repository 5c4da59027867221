"""The page under its Content-Security-Policy, and a DNS-rebinding page, in Chromium.

The `page` fixture fails any test whose page trips the policy; these tests also prove
that the watch sees a violation, and that the policy is the one the server sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from streamkeep.server.security import CSP
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.pagekit import last_reply, send, watch_csp
from tests.browser.test_chat_page import CODE_ANSWER

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_page_works_under_its_policy(page: Page) -> None:
    response = page.goto("/")
    assert response is not None
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    # Markdown with code and links, reasoning and a tool call: everything the page draws.
    send(page, f"Show code [[reasoning=3 text='{CODE_ANSWER}']]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(last_reply(page).locator(".code-block pre code")).to_contain_text('print("hi")')
    send(page, "Weather [[tool=get_weather]]")
    expect(last_reply(page).locator("details.tool")).to_be_visible()
    last_reply(page).locator("details.tool summary").click()
    page.reload()
    expect(last_reply(page).locator("details.tool")).to_be_visible()
    # The module scripts ran (the page answers) and nothing inline was needed.


def test_the_api_docs_work_under_the_same_policy(page: Page) -> None:
    response = page.goto("/docs")
    assert response is not None
    assert response.headers["content-security-policy"] == CSP
    models = page.locator(
        ".opblock", has=page.locator(".opblock-summary-path", has_text="/v1/models")
    )
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    models.get_by_role("button", name="Execute").click()
    status = models.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("200")
    # A POST from the page is same-origin, so the Origin check lets it through.
    path = page.locator(".opblock-summary-path", has_text=re.compile("^/api/chats$"))
    create = page.locator(".opblock-post", has=path)
    create.locator(".opblock-summary").click()
    create.get_by_role("button", name="Try it out").click()
    create.locator("textarea.body-param__text").fill('{"title": "from the docs"}')
    create.get_by_role("button", name="Execute").click()
    expect(create.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
        "201"
    )


@pytest.fixture
def watched(browser: Browser, server: str) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A context whose violations the test itself looks at."""
    context = browser.new_context(base_url=server)
    yield context, watch_csp(context)
    context.close()


def test_inline_script_and_style_are_blocked_and_seen(
    watched: tuple[BrowserContext, list[str]],
) -> None:
    context, violations = watched
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    ran = page.evaluate(
        """() => {
            const s = document.createElement("script");
            s.textContent = "window.__ran = true";
            document.head.append(s);
            document.body.setAttribute("style", "background: red");
            return window.__ran === true;
        }"""
    )
    assert ran is False
    page.wait_for_function("() => getComputedStyle(document.body).backgroundColor !== 'red'")
    for _ in range(200):  # the reports arrive while Playwright waits on the page
        seen = " ".join(violations)
        if "script-src" in seen and "style-src" in seen:
            break
        page.wait_for_timeout(25)
    assert "script-src" in seen, violations
    assert "style-src" in seen, violations


def test_a_rebinding_page_gets_an_error_not_the_chats(browser: Browser, server: str) -> None:
    # evil.example resolves to the server's address, as after a DNS rebinding.
    port = urlsplit(server).port
    rebinding = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"],
    )
    try:
        page = rebinding.new_page()
        response = page.goto(f"http://evil.example:{port}/")
        assert response is not None
        assert response.status == 400
        assert response.json()["error"]["type"] == "invalid_host"
        status = page.evaluate("() => fetch('/api/chats').then((r) => r.status)")
        assert status == 400
    finally:
        rebinding.close()
