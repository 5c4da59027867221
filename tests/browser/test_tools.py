"""Tools on the page: the per-chat switch, and the calls of a reply while it streams,
once it has ended, and after a reload.

The fake provider runs as a process, so a reply's model calls are scripted by a
`[[calls=...]]` directive in the message. It scripts the first model call only: the
second one (after the tool results) gets the fake's echo, "Tool results: <each result,
joined by ' | '>", which makes the two-step loop. `slow` (tests.server.loop_tools, in
the server's config) runs until the reply is stopped, so a running call can be seen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, Response, expect

from tests.browser.pagekit import chat_id, last_reply, send, shoot, stored_chat, text_of
from tests.fakes.upstream_wire import calls_directive

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIX_BY_SEVEN = ("calculator", {"expression": "6*7"})


def tools_button(page: Page) -> Locator:
    return page.locator("#tools-button")


def tool_box(page: Page, name: str) -> Locator:
    return page.get_by_role("checkbox", name=name, exact=True)


def is_patch(response: Response) -> bool:
    return response.request.method == "PATCH"


def call(reply: Locator, name: str) -> Locator:
    return reply.locator(f'details.tool[data-tool="{name}"]')


def new_chat(api: httpx.Client, tools: list[str]) -> str:
    res = api.post("/api/chats", json={"tools": tools})
    res.raise_for_status()
    cid: str = res.json()["id"]
    return cid


def stored_calls(api: httpx.Client, cid: str) -> dict[str, dict[str, Any]]:
    reply = stored_chat(api, cid)["messages"][-1]
    return {p["type"][5:]: p for p in reply["parts"] if p["type"].startswith("tool-")}


def test_the_tools_menu_switches_tools_for_a_new_chat_and_an_open_one(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page.goto("/")
    button = tools_button(page)
    expect(button).to_have_accessible_name("Tools: none on")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    menu = page.get_by_role("group", name="Tools this chat may use")
    expect(menu).to_be_visible()
    for name in ("calculator", "current_time", "slow"):
        expect(tool_box(page, name)).not_to_be_checked()
    # Each tool says what it does.
    expect(tool_box(page, "calculator")).to_have_accessible_description(re.compile(r"\w"))

    # A new chat: the choice is kept until the first message creates the chat.
    tool_box(page, "calculator").check()
    expect(button).to_have_accessible_name("Tools: 1 on")
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()
    send(page, "Hello [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    cid = chat_id(page)
    assert stored_chat(api, cid)["tools"] == ["calculator"]

    # The open chat: each change is saved at once. By keyboard: Enter opens, Tab goes
    # into the list, Space ticks.
    button.focus()
    page.keyboard.press("Enter")
    expect(menu).to_be_visible()
    expect(tool_box(page, "calculator")).to_be_checked()
    page.keyboard.press("Tab")
    expect(tool_box(page, "calculator")).to_be_focused()
    page.keyboard.press("Tab")
    expect(tool_box(page, "current_time")).to_be_focused()
    with page.expect_response(is_patch) as patched:
        page.keyboard.press("Space")
    assert patched.value.ok
    assert stored_chat(api, cid)["tools"] == ["calculator", "current_time"]
    expect(button).to_have_accessible_name("Tools: 2 on")
    shoot(page, "tools-menu", tmp_path)
    with page.expect_response(is_patch):
        tool_box(page, "calculator").uncheck()
    assert stored_chat(api, cid)["tools"] == ["current_time"]
    # A click elsewhere closes the menu.
    page.get_by_role("textbox", name="Message").click()
    expect(menu).to_be_hidden()

    # A reload shows what is stored; a new chat has none (none chosen for it yet).
    page.reload()
    expect(button).to_have_accessible_name("Tools: 1 on")
    button.click()
    expect(tool_box(page, "calculator")).not_to_be_checked()
    expect(tool_box(page, "current_time")).to_be_checked()
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    expect(button).to_have_accessible_name("Tools: none on")
    button.click()
    expect(tool_box(page, "current_time")).not_to_be_checked()


def test_calls_show_while_they_run_and_a_stopped_one_after_a_reload(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    cid = new_chat(api, ["calculator", "current_time", "slow"])
    page.goto(f"/#/chat/{cid}")
    expect(tools_button(page)).to_have_accessible_name("Tools: 3 on")
    calls = [
        SIX_BY_SEVEN,
        ("current_time", {"timezone": "Europe/Paris"}),
        ("slow", {"seconds": 600}),
    ]
    send(page, "Work it out " + calls_directive(calls, text="On it."))
    reply = last_reply(page)
    calc, clock, slow = (call(reply, n) for n in ("calculator", "current_time", "slow"))

    # While the reply streams: two calls are done, with their results; one runs.
    expect(calc).to_have_attribute("data-state", "done")
    expect(clock).to_have_attribute("data-state", "done")
    expect(slow).to_have_attribute("data-state", "running")
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(slow.locator("summary")).to_have_text(
        re.compile(r'^slow\s*\{"seconds":600\}\s*running…$')
    )
    expect(calc.locator(".tool-state")).to_have_text("done")
    expect(calc.locator("summary")).to_contain_text('{"expression":"6*7"}')
    expect(calc.locator("summary")).to_contain_text("→ 42")
    expect(reply.locator(".md").first).to_have_text("On it.")
    # Folded until opened; open, the arguments and the result in full.
    body = calc.locator(".tool-body")
    expect(body).to_be_hidden()
    calc.locator("summary").click()
    expect(body).to_be_visible()
    expect(body.locator("pre").nth(0)).to_have_text('{\n  "expression": "6*7"\n}')
    expect(body.locator("pre").nth(1)).to_have_text("42")
    shoot(page, "tool-calls", tmp_path)
    calc.locator("summary").click()
    expect(body).to_be_hidden()

    # A reload while it runs: the page joins the reply again, and shows the same.
    page.reload()
    reply = last_reply(page)
    calc, clock, slow = (call(reply, n) for n in ("calculator", "current_time", "slow"))
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(slow).to_have_attribute("data-state", "running")
    expect(calc).to_have_attribute("data-state", "done")
    expect(calc.locator("summary")).to_contain_text("→ 42")
    expect(clock).to_have_attribute("data-state", "done")
    expect(reply.locator("details.tool")).to_have_count(3)

    # Stopped while `slow` runs: it was never finished, and says so (no spinner left).
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(slow).to_have_attribute("data-state", "not-run")
    expect(slow.locator(".tool-state")).to_have_text("not run")
    stored = stored_calls(api, cid)
    assert stored["slow"]["state"] == "input-available"
    assert stored["calculator"]["output"] == 42
    now = stored["current_time"]["output"]
    expect(clock.locator("summary")).to_contain_text(f"→ {now}")

    # After a reload, from the stored parts: the same.
    page.reload()
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "stopped")
    calc, clock, slow = (call(reply, n) for n in ("calculator", "current_time", "slow"))
    expect(calc).to_have_attribute("data-state", "done")
    expect(calc.locator("summary")).to_contain_text("→ 42")
    expect(slow).to_have_attribute("data-state", "not-run")
    clock.locator("summary").press("Enter")  # a keyboard user opens it too
    expect(clock.locator(".tool-body pre").nth(0)).to_have_text(
        '{\n  "timezone": "Europe/Paris"\n}'
    )
    expect(clock.locator(".tool-body pre").nth(1)).to_have_text(now)
    slow.locator("summary").click()
    expect(slow.locator(".tool-body")).to_contain_text('"seconds": 600')
    expect(slow.locator(".tool-body")).to_contain_text("ended before this call was run")


def test_a_finished_reply_shows_results_errors_and_its_answer(
    page: Page, api: httpx.Client
) -> None:
    cid = new_chat(api, ["calculator"])
    page.goto(f"/#/chat/{cid}")
    calls = [("calculator", {"expression": "2+3"}), ("calculator", {"expression": "1/0"})]
    send(page, "Two sums " + calls_directive(calls))
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    stored = stored_chat(api, cid)["messages"][-1]
    error = stored["parts"][2]["errorText"]
    assert "division by zero" in error
    assert text_of(stored) == f"Tool results: 5 | Error: {error}"

    def check(reply: Locator) -> None:
        good, bad = reply.locator("details.tool").nth(0), reply.locator("details.tool").nth(1)
        expect(reply.locator("details.tool")).to_have_count(2)
        expect(good).to_have_attribute("data-state", "done")
        expect(good.locator("summary")).to_contain_text("→ 5")
        expect(bad).to_have_attribute("data-state", "error")
        expect(bad.locator(".tool-state")).to_have_text("error")
        bad.locator("summary").click()
        expect(bad.locator(".tool-body pre.bad")).to_have_text(error)
        # Then the answer; the steps leave nothing else on the page.
        expect(reply.locator(".parts > .md")).to_have_text(f"Tool results: 5 | Error: {error}")
        expect(reply.locator(".parts > *")).to_have_count(3)

    check(reply)
    page.reload()
    check(last_reply(page))
