"""The rest of the page: versions, Markdown, reasoning and tools, the sidebar, phone width."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from streamkeep.generation.titles import title_from
from tests.browser.pagekit import (
    chat_id,
    last_reply,
    replies,
    send,
    shoot,
    stored_chat,
    text_of,
)
from tests.browser.procs import MODEL

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CODE_ANSWER = (
    'Here is how:\n\n```python\nprint("hi")\nx = 1 < 2\n```\n\n'
    "Raw <img src=x onerror=alert(1)> and <b>bold tag</b> stay text; **this** is bold.\n\n"
    "Links: [docs](https://example.com/docs) and [trap](javascript:alert(1))."
)

SQUARES = (
    "Use a **list comprehension**:\n\n```python\nsquares = [n * n for n in range(10)]\n```\n\n"
    "It reads like the maths, and it is *fast*."
)


def test_regenerate_and_switch_versions(page: Page, api: httpx.Client, tmp_path: Path) -> None:
    page.goto("/")
    send(page, f"How do I square numbers in Python? [[reasoning=8 text='{SQUARES}']]")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    first_id = reply.get_attribute("data-id")

    reply.get_by_role("button", name="Regenerate answer").click()
    versions = last_reply(page).get_by_role("group", name="Versions")
    expect(versions).to_contain_text("2/2")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    second_id = last_reply(page).get_attribute("data-id")
    assert second_id not in (first_id, None)
    shoot(page, "versions", tmp_path)
    page.emulate_media(color_scheme="dark")
    shoot(page, "dark", tmp_path)
    page.emulate_media(color_scheme="light")

    versions.get_by_role("button", name="Previous version").click()
    expect(versions).to_contain_text("1/2")
    expect(last_reply(page)).to_have_attribute("data-id", first_id or "")
    stored = stored_chat(api, chat_id(page))
    assert stored["messages"][-1]["id"] == first_id
    assert stored["messages"][-1]["sibling_ids"] == [first_id, second_id]

    # Editing the question makes a second version of it, with its own answer.
    user = page.locator("li.msg.user").last
    user.get_by_role("button", name="Edit message").click()
    box = page.get_by_role("textbox", name="Edit message")
    box.fill('Pick again [[text="Seven it is."]]')
    box.press("Enter")
    expect(last_reply(page)).to_contain_text("Seven it is.")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    user_versions = page.locator("li.msg.user").last.get_by_role("group", name="Versions")
    expect(user_versions).to_contain_text("2/2")
    user_versions.get_by_role("button", name="Previous version").click()
    expect(page.locator("li.msg.user").last).to_contain_text("How do I square numbers")
    # Back on the first question, with one of its two answers (the server picks which).
    expect(last_reply(page)).to_have_attribute("data-id", re.compile(f"^({first_id}|{second_id})$"))
    expect(last_reply(page).get_by_role("group", name="Versions")).to_contain_text("/2")


def test_markdown_code_block_and_no_html_from_the_model(page: Page, tmp_path: Path) -> None:
    page.goto("/")
    send(page, f"Show code [[text='{CODE_ANSWER}']]")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    code = reply.locator(".code-block pre code")
    expect(code).to_have_text('print("hi")\nx = 1 < 2\n')
    expect(reply.locator(".code-head")).to_contain_text("python")
    expect(reply.locator("strong")).to_have_text("this")
    # HTML written by the model is shown as text, never made into elements.
    expect(reply).to_contain_text("<img src=x onerror=alert(1)>")
    expect(reply).to_contain_text("<b>bold tag</b>")
    expect(reply.locator("img, b")).to_have_count(0)
    docs = reply.get_by_role("link", name="docs")
    expect(docs).to_have_attribute("href", "https://example.com/docs")
    expect(docs).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(reply.locator("a[href^='javascript']")).to_have_count(0)
    shoot(page, "answer", tmp_path)


def test_reasoning_folded_and_tool_call_shown(page: Page) -> None:
    page.goto("/")
    send(page, "Weather in Paris [[reasoning=4 tool=get_weather]]")
    reply = last_reply(page)
    expect(reply).not_to_have_attribute("data-status", "streaming")
    reasoning = reply.locator("details.reasoning")
    expect(reasoning).not_to_have_attribute("open", "")
    expect(reasoning.locator("summary")).to_have_text("Reasoning")
    reasoning.locator("summary").click()
    expect(reasoning.locator(".reasoning-text")).to_contain_text("let me think")
    tool = reply.locator("details.tool")
    expect(tool.locator(".tool-name")).to_have_text("get_weather")
    tool.locator("summary").click()
    expect(tool.locator("pre").first).to_contain_text('"q": "Weather in Paris"')


def test_a_new_chat_gets_the_title_the_server_would_give_it(page: Page, api: httpx.Client) -> None:
    # One title rule: the page names a new chat at once the way the server titles an
    # untitled one (whitespace runs become one space, 80 characters with an ellipsis).
    text = "Title rule " + "wording " * 12 + "\n  and a second line [[tokens=2]]"
    page.goto("/")
    send(page, text)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    title = stored_chat(api, chat_id(page))["title"]
    assert title == title_from(text)
    assert len(title) == 80 and title.endswith("…")


def test_sidebar_new_rename_delete(page: Page, api: httpx.Client) -> None:
    page.goto("/")
    send(page, "Sidebar check one [[tokens=2]]")
    first = chat_id(page)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.get_by_role("button", name="New chat").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    send(page, "Sidebar check two [[tokens=2]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    second = chat_id(page)
    assert second != first

    # Old chats are a click away.
    page.get_by_role("link", name="Sidebar check one").click()
    expect(page).to_have_url(re.compile(f"#/chat/{first}$"))
    expect(page.locator("li.msg.user")).to_have_text("Sidebar check one [[tokens=2]]")

    page.get_by_role("button", name="Rename chat Sidebar check one").click()
    title = page.get_by_role("textbox", name="Chat title")
    title.fill("Renamed chat")
    title.press("Enter")
    expect(page.get_by_role("link", name="Renamed chat")).to_be_visible()
    expect(page.get_by_role("heading", name="Renamed chat")).to_be_visible()
    assert stored_chat(api, first)["title"] == "Renamed chat"

    page.get_by_role("button", name="Delete chat Renamed chat").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.get_by_role("link", name="Renamed chat")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"#/$"))
    assert api.get(f"/api/chats/{first}").status_code == 404
    assert api.get(f"/api/chats/{second}").status_code == 200


def test_older_chats_are_a_click_away(page: Page, api: httpx.Client) -> None:
    ids = [api.post("/api/chats", json={"title": f"Paged {n}"}).json()["id"] for n in range(31)]
    try:
        page.goto("/")
        expect(page.get_by_role("link", name="Paged 30", exact=True)).to_be_visible()
        oldest = page.get_by_role("link", name="Paged 0", exact=True)
        expect(oldest).to_have_count(0)
        page.get_by_role("button", name="Load older chats").click()
        oldest.click()
        expect(page.get_by_role("heading", name="Paged 0")).to_be_visible()
    finally:
        # The server is shared: leave the other tests' sidebars (and screenshots) tidy.
        for cid in ids:
            api.delete(f"/api/chats/{cid}")


def test_keyboard_skip_link_and_focus(page: Page, api: httpx.Client) -> None:
    cid = api.post("/api/chats", json={"title": "Keyboard"}).json()["id"]
    page.goto(f"/#/chat/{cid}")
    expect(page.get_by_role("heading", name="Keyboard")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the message box")).to_be_focused()
    page.keyboard.press("Enter")
    box = page.get_by_role("textbox", name="Message")
    expect(box).to_be_focused()
    page.keyboard.type("Typed by keyboard [[tokens=3]]")
    page.keyboard.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(box).to_be_focused()
    expect(box).to_have_value("")
    expect(page).to_have_url(re.compile(f"#/chat/{cid}$"))


def test_model_picker_lists_models(page: Page) -> None:
    page.goto("/")
    picker = page.get_by_role("combobox", name="Model")
    expect(picker).to_have_value(MODEL)


def test_phone_width_sidebar_collapses(page: Page, tmp_path: Path) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    send(page, "Small screen [[text='Fits on a **phone** too.']]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    sidebar = page.get_by_role("complementary", name="Chats")
    expect(sidebar).to_be_hidden()
    shoot(page, "phone", tmp_path)
    menu = page.get_by_role("button", name="Chats", exact=True)
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.click()
    expect(sidebar).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("button", name="New chat")).to_be_focused()
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(menu).to_be_focused()
    expect(replies(page)).to_have_count(1)


def test_a_double_enter_on_a_new_chat_sends_once(page: Page, api: httpx.Client) -> None:
    before = {c["id"] for c in api.get("/api/chats", params={"limit": 100}).json()["items"]}
    page.goto("/")
    box = page.get_by_role("textbox", name="Message")
    box.fill("Only once, please")
    box.press("Enter")
    box.press("Enter")  # while the chat is still being created
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    after = api.get("/api/chats", params={"limit": 100}).json()["items"]
    new = [c for c in after if c["id"] not in before]
    assert len(new) == 1
    messages = stored_chat(api, new[0]["id"])["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_a_reply_cut_at_the_token_limit_says_so_and_continues(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page.goto("/")
    send(page, "Write a long poem [[tokens=6 finish=length]]")
    cut = last_reply(page)
    expect(cut).to_have_attribute("data-status", "complete")
    expect(cut.locator(".cut-note")).to_contain_text("Cut at the token limit.")
    page.reload()  # the stored reply says so too, not only the stream's last chunk
    cut = last_reply(page)
    expect(cut.locator(".cut-note")).to_contain_text("Cut at the token limit.")
    shoot(page, "cut-at-limit", tmp_path)

    box = page.get_by_role("textbox", name="Message")
    box.fill("a draft")  # Continue leaves what the reader is typing alone
    cut.get_by_role("button", name="Continue").click()
    expect(replies(page)).to_have_count(2)
    follow = last_reply(page)
    expect(follow).to_have_attribute("data-status", "complete")
    expect(follow).to_contain_text("You said: Continue from where you stopped.")
    expect(box).to_have_value("a draft")
    # The cut reply still says it was cut; only the newest reply offers to continue.
    first = replies(page).first
    expect(first.locator(".cut-note")).to_contain_text("Cut at the token limit.")
    expect(first.get_by_role("button", name="Continue")).to_have_count(0)
    expect(follow.locator(".cut-note")).to_have_count(0)

    stored = stored_chat(api, chat_id(page))["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert (stored[1]["status"], stored[1]["finish_reason"]) == ("complete", "length")
    assert text_of(stored[2]) == "Continue from where you stopped."
    assert stored[2]["parent_id"] == stored[1]["id"]
    assert stored[3]["finish_reason"] == "stop"
