"""The page streams a reply, stops it, resumes it after a refresh, and shows failures.

The fake provider is told what to do by a directive in the message, e.g.
`[[tokens=60 delay=0.05]]`: 60 words, one every 50 ms.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import APIResponse, Browser, Page, Route, expect

from tests.browser.pagekit import (
    chat_id,
    last_reply,
    replies,
    reply_text,
    send,
    shoot,
    stored_chat,
    text_of,
    wait_reply_longer_than,
    wait_until_held,
    words,
)
from tests.browser.procs import launch_server, stop_process
from tests.conftest import free_port
from tests.tcpcut import CutRelay

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_tokens_appear_before_the_answer_ends(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="What can I help with?")).to_be_visible()
    shoot(page, "empty", tmp_path)

    send(page, "Tell me a story [[tokens=40 delay=0.1]]")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    # The text grows while the Stop button is up: tokens arrive before the end.
    first = wait_reply_longer_than(page, 0)
    wait_reply_longer_than(page, max(first, 80))
    # Screen readers get the reply politely, once it settles (busy while it streams).
    live = last_reply(page).locator(".parts")
    expect(live).to_have_attribute("aria-live", "polite")
    expect(live).to_have_attribute("aria-busy", "true")
    shoot(page, "streaming", tmp_path)

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    expect(stop).to_be_hidden()
    expect(live).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Send message")).to_be_visible()

    stored = stored_chat(api, chat_id(page))["messages"][-1]
    assert stored["status"] == "complete"
    assert len(words(text_of(stored))) == 40
    assert reply_text(reply).split() == text_of(stored).split()
    expect(reply.locator(".usage")).to_contain_text("40 out")
    # The first message names the chat in the sidebar, and the URL reopens it.
    expect(page.get_by_role("link", name="Tell me a story")).to_be_visible()


def test_shift_enter_is_a_new_line(page: Page) -> None:
    page.goto("/")
    box = page.get_by_role("textbox", name="Message")
    box.press_sequentially("one")
    box.press("Shift+Enter")
    box.press_sequentially("two")
    expect(box).to_have_value("one\ntwo")
    expect(page.locator("li.msg")).to_have_count(0)


def test_stop_keeps_the_partial_answer(page: Page, api: httpx.Client) -> None:
    page.goto("/")
    send(page, "Go on [[tokens=300 delay=0.05]]")
    wait_reply_longer_than(page, 20)
    page.get_by_role("button", name="Stop").click()

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.locator(".badge")).to_have_text("Stopped")
    stored = stored_chat(api, chat_id(page))["messages"][-1]
    assert stored["status"] == "stopped"
    kept = words(text_of(stored))
    assert 0 < len(kept) < 300
    assert reply_text(reply).split() == kept


def test_stop_pressed_before_the_request_reaches_the_server_sticks(
    page: Page, api: httpx.Client
) -> None:
    # The stream's POST is held in the browser, so Stop is pressed while the server has
    # not heard of the reply yet; the provider then waits a second before its first byte,
    # so a stop sent once the server has answered lands before any word.
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/api/chats/*/messages", hold)
    page.goto("/")
    send(page, "Never mind [[tokens=100 delay=0.05 hang_before_first_byte=1]]")
    stop = page.get_by_role("button", name="Stop")
    stop.click()
    # Either the stop went out (and was answered) at once, or the page keeps it for later
    # and says so; only then may the POST go on to the server.
    shown = page.wait_for_function(
        """() => {
            const stop = document.getElementById('stop');
            const sent = performance.getEntriesByType('resource')
                .some(e => e.name.endsWith('/stop'));
            return (sent || stop.getAttribute('aria-disabled') === 'true') && stop.innerText;
        }"""
    ).json_value()
    # The page asked for the stream before Stop was shown.
    wait_until_held(page, held, "the page never asked for the stream")
    held[0].continue_()
    page.unroute("**/api/chats/*/messages", hold)

    reply = last_reply(page)
    expect(reply).not_to_have_attribute("data-status", "streaming")
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.locator(".badge")).to_have_text("Stopped")
    stored = stored_chat(api, chat_id(page))["messages"][-1]
    assert stored["status"] == "stopped"
    assert len(words(text_of(stored))) < 100
    # No half state: Send is back, nothing spins, and the next message goes through.
    expect(stop).to_be_hidden()
    expect(page.get_by_role("button", name="Send message")).to_be_enabled()
    expect(reply.locator(".typing")).to_have_count(0)
    send(page, "And now? [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(page.locator("li.msg.assistant")).to_have_count(2)
    # Meanwhile the page said it was stopping.
    assert shown.strip() == "Stopping…"


def test_focus_returns_to_the_message_box_when_a_reply_ends(page: Page) -> None:
    page.goto("/")
    box = page.get_by_role("textbox", name="Message")
    # Finish: sent with the mouse, from the Send button that gives way to Stop.
    box.fill("First [[tokens=5 delay=0.05]]")
    page.get_by_role("button", name="Send message").click()
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(box).to_be_focused()

    # Stop: the clicked Stop button goes away; the next message is typed at once.
    page.keyboard.type("Second [[tokens=300 delay=0.05]]")
    page.keyboard.press("Enter")
    wait_reply_longer_than(page, 10)
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    expect(box).to_be_focused()

    # Error: the clicked Regenerate button goes away with the answer it replaces.
    page.keyboard.type("Third [[fail_after=3 delay=0.2]]")
    page.keyboard.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", "error")
    last_reply(page).get_by_role("button", name="Regenerate answer").click()
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    expect(box).not_to_be_focused()
    expect(last_reply(page)).to_have_attribute("data-status", "error")
    expect(box).to_be_focused()
    page.keyboard.type("typed")
    expect(box).to_have_value("typed")


def test_a_message_sent_while_the_chat_reloads_keeps_its_reply_on_screen(
    page: Page, api: httpx.Client
) -> None:
    # When a reply ends the page fetches the chat again. The reader may send the next message
    # before that fetch answers: the message goes at once, and the fetched copy, older than
    # the new reply, must not replace it. Here the copy is held until the next reply streams.
    held: list[tuple[Route, APIResponse]] = []

    def hold_first_reload(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route(re.compile(r"/api/chats/[^/?#]+$"), hold_first_reload)
    page.goto("/")
    send(page, "First [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    wait_until_held(page, held, "the page never fetched the chat after the reply")

    send(page, "Second [[tokens=80 delay=0.05]]")
    seen = wait_reply_longer_than(page, 10)
    route, stale = held[0]
    route.fulfill(response=stale)
    # The fetched copy (one reply) arrives and is dropped: the second reply goes on growing.
    wait_reply_longer_than(page, seen + 20)
    expect(replies(page)).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    stored = stored_chat(api, chat_id(page))["messages"]
    assert [m["status"] for m in stored if m["role"] == "assistant"] == ["complete"] * 2
    assert reply_text(last_reply(page)).split() == words(text_of(stored[-1]))


def test_focus_stays_where_the_reader_put_it_during_a_reply(page: Page) -> None:
    page.goto("/")
    send(page, "Something to select [[text='Select this sentence, please.']]")
    first = replies(page).first
    expect(first).to_have_attribute("data-status", "complete")
    send(page, "Go on [[tokens=60 delay=0.05]]")
    wait_reply_longer_than(page, 10)
    # While it streams, the reader selects the first answer's text.
    first.locator(".md").click(click_count=3)
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    # Reloaded from the server (the question now has its id): nothing moves focus after.
    question = page.locator("li.msg.user").last
    expect(question.get_by_role("button", name="Edit message")).to_be_enabled()
    expect(page.get_by_role("textbox", name="Message")).not_to_be_focused()
    selected: str = page.evaluate("() => document.getSelection().toString()")
    assert "Select this sentence" in selected


def test_refresh_mid_answer_resumes_without_repeats(page: Page, api: httpx.Client) -> None:
    page.goto("/")
    send(page, "Count with me [[tokens=60 delay=0.08]]")
    cid = chat_id(page)
    wait_reply_longer_than(page, 30)

    page.reload()
    # Back on the same chat, still streaming, then complete: the page rejoined the stream.
    expect(page.get_by_role("heading", name="Count with me")).to_be_visible()
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    stored = stored_chat(api, cid)["messages"][-1]
    assert stored["status"] == "complete"
    assert len(words(text_of(stored))) == 60
    # Exactly the stored words, in order: nothing repeated, nothing lost.
    assert reply_text(reply).split() == text_of(stored).split()
    expect(page.locator("li.msg.assistant")).to_have_count(1)


def test_provider_failure_is_shown_in_the_page(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page.goto("/")
    send(page, "Break please [[fail_after=5 delay=0.05]]")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "error")
    expect(reply.locator(".badge")).to_have_text("Error")
    expect(page.get_by_role("alert")).not_to_be_empty()
    stored = stored_chat(api, chat_id(page))["messages"][-1]
    assert stored["status"] == "error"
    assert stored["error"]
    expect(reply.locator(".msg-error")).to_have_text(stored["error"])
    # The words that came before the failure are kept and shown.
    assert reply_text(reply).split() == text_of(stored).split() != []
    shoot(page, "error", tmp_path)


def test_a_reply_cut_short_by_the_provider_is_shown_as_an_error(
    page: Page, api: httpx.Client
) -> None:
    page.goto("/")
    # The provider's body ends after four words, with no finish reason and no [DONE].
    send(page, "Cut me off [[tokens=10 cut_after=4]]")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "error")
    expect(reply.locator(".badge")).to_have_text("Error")
    expect(reply.locator(".msg-error")).to_have_text(
        "the provider closed the stream before finishing"
    )
    assert reply_text(reply).split() == ["lorem", "ipsum", "dolor", "sit"]
    stored = stored_chat(api, chat_id(page))["messages"][-1]
    assert (stored["status"], text_of(stored)) == ("error", "lorem ipsum dolor sit")


def test_http_error_is_shown_in_the_page(page: Page, api: httpx.Client) -> None:
    page.goto("/")
    send(page, "Hello [[tokens=3]]")
    cid = chat_id(page)
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    # The chat disappears behind the page's back: the next send gets a 404.
    api.delete(f"/api/chats/{cid}").raise_for_status()
    send(page, "Anyone there?")
    expect(page.get_by_role("alert")).to_contain_text("not")


def test_dropped_connection_rejoins_after_the_last_event(
    page: Page, api: httpx.Client, server: str
) -> None:
    relay = CutRelay(int(server.rsplit(":", 1)[1]))
    try:
        page.goto(f"{relay.url}/")
        send(page, "Keep going [[tokens=80 delay=0.08]]")
        cid = chat_id(page)
        wait_reply_longer_than(page, 20)
        assert relay.cut() > 0

        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "complete")
        sent = relay.sent_by_clients().decode("latin-1").lower()
    finally:
        relay.close()
    # The page came back for the rest of the stream, saying where it had got to...
    assert f"get /api/chats/{cid.lower()}/stream" in sent
    assert "last-event-id: " in sent
    # ...and shows exactly the stored answer: nothing lost, nothing repeated.
    stored = stored_chat(api, cid)["messages"][-1]
    assert stored["status"] == "complete"
    assert len(words(text_of(stored))) == 80
    assert reply_text(reply).split() == text_of(stored).split()


def wait_checkpointed(url: str, chat_id: str) -> None:
    """Until the streaming reply's last checkpoint (in the database) holds some words."""
    deadline = time.monotonic() + 30  # a bounded wait, not a timing check
    while time.monotonic() < deadline:
        reply = httpx.get(f"{url}/api/chats/{chat_id}").json()["messages"][-1]
        assert reply["status"] == "streaming", "the reply ended before its first checkpoint"
        if text_of(reply):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint of the reply was stored")


def wait_stored_status(url: str, chat_id: str, status: str) -> None:
    for _ in range(200):  # a bounded wait for the server's orphan sweep
        if httpx.get(f"{url}/api/chats/{chat_id}").json()["messages"][-1]["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"the reply never became {status}")


def test_server_killed_mid_answer_shows_interrupted(
    browser: Browser, fake_provider: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = launch_server(tmp_path, fake_provider, port)
    context = browser.new_context(base_url=url)
    try:
        page = context.new_page()
        page.goto("/")
        send(page, "Until the lights go out [[tokens=400 delay=0.05]]")
        cid = chat_id(page)
        wait_reply_longer_than(page, 20)
        wait_checkpointed(url, cid)
        proc.kill()  # no graceful shutdown: the reply is left `streaming` in the database
        proc.wait()
        proc = launch_server(tmp_path, fake_provider, port)

        # The restarted server finds the dead one's reply silent and marks it interrupted;
        # the page shows it, keeping the checkpointed words.
        wait_stored_status(url, cid, "interrupted")
        page.reload()
        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "interrupted")
        expect(reply.locator(".badge")).to_have_text("Interrupted")
        stored = httpx.get(f"{url}/api/chats/{cid}").json()["messages"][-1]
        assert stored["status"] == "interrupted"
        assert words(text_of(stored))  # the last checkpoint's words are kept...
        assert reply_text(reply).split() == words(text_of(stored))  # ...and shown
    finally:
        context.close()
        stop_process(proc)
