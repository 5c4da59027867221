"""`/docs` works with no network: Swagger UI's files come from the server itself."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, expect

from tests.browser.pagekit import shoot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def test_docs_render_and_run_with_no_network(browser: Browser, server: str, tmp_path: Path) -> None:
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    blocked: list[str] = []

    def loopback_only(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", loopback_only)
    page = context.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda exc: failures.append(str(exc)))
    page.goto("/docs")

    expect(page.locator(".information-container .title")).to_contain_text("streamkeep")
    for path in ("/api/chats", "/api/chats/{chat_id}/stream", "/v1/chat/completions"):
        expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()
    # An operation runs from the page: Try it out, Execute, and the server's answer shows.
    models = page.locator(
        ".opblock", has=page.locator(".opblock-summary-path", has_text="/v1/models")
    )
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    models.get_by_role("button", name="Execute").click()
    expect(models.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
        "200"
    )
    expect(models.locator(".live-responses-table .microlight").first).to_contain_text(
        "fake/fake-model"
    )
    shoot(page, "docs", tmp_path)

    assert blocked == [] and failures == []
    origin = urlsplit(server).netloc
    assert requested and all(urlsplit(u).netloc == origin for u in requested), requested
    # Nothing on the page would load from elsewhere either (scripts, styles, images).
    assets = page.eval_on_selector_all(
        "script[src], link[href], img[src], iframe[src], source[src]",
        "els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))",
    )
    assert assets
    for url in assets:
        full = urlsplit(url)
        assert full.scheme == "data" or full.netloc in ("", origin), url
    context.close()
