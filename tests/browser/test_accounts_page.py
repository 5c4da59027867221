"""Accounts on the page, in Chromium: the sign-in screen, the signed-in user and
sign-out, a session ended server-side, and the user's API keys.

These tests have their own `streamkeep serve`: a user makes auth turn on for the whole
server, and the shared one must stay in the single-user default for the other tests.
Users are made (and sessions ended) through the store, on the server's own database,
as an administrator would; each test makes its own user, so tests stay independent.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from streamkeep.store import ChatStore, Database, UserRecord
from tests.browser.pagekit import chat_id, last_reply, send, shoot, watch_csp
from tests.browser.procs import launch_server, stop_process
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
SESSION_COOKIE = "streamkeep_session"
SESSION_ENDED = "Your session has ended; sign in again."
WRONG = "Wrong user name or password."

T = TypeVar("T")
_names = itertools.count(1)


@dataclass
class AccountsServer:
    url: str
    database_url: str

    def store(self, action: Callable[[ChatStore], Awaitable[T]]) -> T:
        """Run `action` on a store of the server's database. In a thread of its own:
        Playwright's sync API holds an event loop in this one."""

        async def run() -> T:
            db = Database.from_url(self.database_url)
            try:
                return await action(ChatStore(db))
            finally:
                await db.dispose()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def make_user(self) -> UserRecord:
        name = f"user{next(_names)}"
        return self.store(lambda s: s.create_user(name, PASSWORD))


@pytest.fixture(scope="module")
def accounts_server(
    fake_provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AccountsServer]:
    home = tmp_path_factory.mktemp("accounts")
    port = free_port()
    proc = launch_server(home, fake_provider, port)
    try:
        server = AccountsServer(
            f"http://127.0.0.1:{port}", f"sqlite:///{home / 'data' / 'streamkeep.db'}"
        )
        server.make_user()  # auth is on from the start, for every test of the module
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def context(browser: Browser, accounts_server: AccountsServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=accounts_server.url, viewport={"width": 1280, "height": 820})
    csp_violations = watch_csp(ctx)
    yield ctx
    ctx.close()
    assert csp_violations == []


@pytest.fixture
def page(context: BrowserContext) -> Page:
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    return pg


@pytest.fixture
def user(accounts_server: AccountsServer) -> UserRecord:
    return accounts_server.make_user()


def sign_in(page: Page, name: str, password: str = PASSWORD) -> None:
    page.get_by_label("User name").fill(name)
    password_box = page.get_by_label("Password")
    password_box.fill(password)
    password_box.press("Enter")


def expect_signed_out(page: Page) -> None:
    """The sign-in screen, and nothing of the chats: no list, no messages, no user."""
    expect(page.get_by_role("heading", name="Sign in to streamkeep")).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).to_be_hidden()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#chat-list a")).to_have_count(0)
    expect(page.locator("li.msg")).to_have_count(0)
    expect(page.locator("#account-name")).to_have_text("")
    expect(page.locator("#input")).to_have_value("")


def expect_signed_in(page: Page, name: str) -> None:
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in to streamkeep")).to_be_hidden()
    account = page.get_by_role("region", name="Account")
    expect(account.locator("#account-name")).to_have_text(name)
    expect(account.get_by_role("button", name="Sign out")).to_be_visible()


def session_token(context: BrowserContext) -> str:
    tokens = [c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE]
    assert len(tokens) == 1, context.cookies()
    return tokens[0]


def test_a_wrong_password_shows_an_error_and_no_app(
    page: Page, user: UserRecord, tmp_path: Path
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(f"{r.method} {urlsplit(r.url).path}"))
    page.goto("/")
    expect_signed_out(page)
    name_box = page.get_by_label("User name")
    password_box = page.get_by_label("Password")
    expect(name_box).to_be_focused()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()

    sign_in(page, user.name, "not the password")
    error = page.get_by_role("alert").filter(has_text=WRONG)
    expect(error).to_have_text(WRONG)
    expect_signed_out(page)
    # The name stays; the password is to be typed again, and focus is there for it.
    expect(name_box).to_have_value(user.name)
    expect(password_box).to_have_value("")
    expect(password_box).to_be_focused()
    expect(name_box).to_have_attribute("aria-invalid", "true")
    expect(password_box).to_have_attribute("aria-invalid", "true")
    shoot(page, "sign-in", tmp_path)

    # An unknown name gets the very same words: they say nothing of which field was wrong.
    sign_in(page, "nobody-by-that-name", PASSWORD)
    expect(error).to_have_text(WRONG)
    expect_signed_out(page)
    assert not page.context.cookies()
    # Signed out, the page asks the API who it is and how to sign in (once), and tries
    # to sign in, nothing else.
    api_calls = [a for a in asked if a.split()[1].startswith(("/api/", "/v1/"))]
    assert api_calls == [
        "GET /api/me",
        "GET /api/auth/methods",
        "POST /api/auth/login",
        "POST /api/auth/login",
    ]
    # No provider configured: no "Sign in with" button.
    expect(page.get_by_role("link", name=re.compile("Sign in with"))).to_have_count(0)


def test_the_right_password_shows_the_app_and_a_chat_made_is_listed(
    page: Page, context: BrowserContext, user: UserRecord, accounts_server: AccountsServer
) -> None:
    page.goto("/")
    sign_in(page, user.name)
    expect_signed_in(page, user.name)
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    expect(page.get_by_role("alert").filter(has_text=WRONG)).to_have_count(0)

    send(page, "Signed in and chatting [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    cid = chat_id(page)
    expect(page.get_by_role("link", name="Signed in and chatting")).to_be_visible()

    # The cookie is HttpOnly: the server set it, the page's scripts cannot read it.
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert SESSION_COOKIE not in page.evaluate("() => document.cookie")

    # The chat is this user's, stored: the session's cookie, outside the browser, sees it.
    cookies = {SESSION_COOKIE: cookie["value"]}
    with httpx.Client(base_url=accounts_server.url, cookies=cookies) as client:
        assert client.get("/api/me").json()["user"]["name"] == user.name
        items = client.get("/api/chats").json()["items"]
    assert [c["id"] for c in items] == [cid]

    # A reload keeps the session: still signed in, the chat still listed and open.
    page.reload()
    expect_signed_in(page, user.name)
    expect(page.get_by_role("link", name="Signed in and chatting")).to_be_visible()
    expect(last_reply(page)).to_have_attribute("data-status", "complete")


def test_sign_out_leaves_nothing_on_screen_and_a_reload_stays_signed_out(
    page: Page, context: BrowserContext, user: UserRecord, accounts_server: AccountsServer
) -> None:
    page.goto("/")
    sign_in(page, user.name)
    send(page, "Soon signed out [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.get_by_role("textbox", name="Message").fill("an unsent draft")
    token = session_token(context)

    page.get_by_role("button", name="Sign out").click()
    expect_signed_out(page)
    expect(page.get_by_label("User name")).to_be_focused()
    expect(page.get_by_label("User name")).to_have_value("")
    expect(page.get_by_role("status").filter(has_text=SESSION_ENDED)).to_have_count(0)
    assert "#/chat/" not in page.url
    assert page.content().count("Soon signed out") == 0
    # The server ended the session, and the browser dropped its cookie.
    assert all(c["name"] != SESSION_COOKIE for c in context.cookies())
    with httpx.Client(base_url=accounts_server.url, cookies={SESSION_COOKIE: token}) as client:
        assert client.get("/api/me").status_code == 401

    page.reload()
    expect_signed_out(page)
    expect(page.get_by_label("User name")).to_be_focused()


def test_a_session_revoked_server_side_sends_the_page_to_sign_in(
    page: Page, context: BrowserContext, user: UserRecord, accounts_server: AccountsServer
) -> None:
    page.goto("/")
    sign_in(page, user.name)
    send(page, "Before the revoke [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    page.get_by_role("button", name="New chat").click()
    expect(page.locator("li.msg")).to_have_count(0)

    token = session_token(context)
    accounts_server.store(lambda s: s.revoke_session(token))
    # Nothing changes until the page asks the server something: here, opening the chat.
    page.get_by_role("link", name="Before the revoke").click()
    expect(page.get_by_role("status")).to_have_text(SESSION_ENDED)
    expect_signed_out(page)
    # The same person most likely signs in again: the name is kept, the caret is on the
    # password.
    expect(page.get_by_label("User name")).to_have_value(user.name)
    expect(page.get_by_label("Password")).to_be_focused()
    expect(page.locator(".alert")).to_have_count(0)  # the sign-in screen says it, once

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    expect_signed_in(page, user.name)
    expect(page.get_by_role("link", name="Before the revoke")).to_be_visible()
    expect(page.locator("li.msg.user")).to_have_text("Before the revoke [[tokens=3]]")
    expect(page.get_by_role("status").filter(has_text=SESSION_ENDED)).to_have_count(0)


def test_a_user_disabled_server_side_is_sent_to_sign_in_and_kept_out(
    page: Page, user: UserRecord, accounts_server: AccountsServer
) -> None:
    page.goto("/")
    sign_in(page, user.name)
    expect_signed_in(page, user.name)

    accounts_server.store(lambda s: s.disable_user(user.id))
    send(page, "Sent after being disabled [[tokens=3]]")
    expect(page.get_by_role("status")).to_have_text(SESSION_ENDED)
    expect_signed_out(page)
    assert page.content().count("Sent after being disabled") == 0

    sign_in(page, user.name)
    expect(page.get_by_role("alert").filter(has_text=WRONG)).to_have_text(WRONG)
    expect_signed_out(page)


def test_api_keys_are_made_shown_once_listed_and_revoked(
    page: Page,
    context: BrowserContext,
    user: UserRecord,
    accounts_server: AccountsServer,
    tmp_path: Path,
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/")
    sign_in(page, user.name)
    expect_signed_in(page, user.name)

    page.get_by_role("button", name="API keys").click()
    dialog = page.get_by_role("dialog", name="API keys")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".keys-list")).to_have_text("No keys yet.")
    name_box = dialog.get_by_label("Name of a new key (optional)")
    expect(name_box).to_be_focused()

    name_box.fill("laptop")
    dialog.get_by_role("button", name="Create key").click()
    shown = dialog.get_by_label("Your new key")
    expect(shown).to_have_value(re.compile(r"^sk-keep-\S{20,}$"))
    key = shown.input_value()
    expect(dialog).to_contain_text("you will not see it again")
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("() => navigator.clipboard.readText()") == key

    row = dialog.locator(".key-row", has_text="laptop")
    expect(row).to_contain_text(key[:16])
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text("Never used")
    shoot(page, "api-keys", tmp_path)
    assert key not in dialog.locator(".keys-list").inner_text()

    # The key works, as this user.
    with httpx.Client(base_url=accounts_server.url) as client:
        me = client.get("/api/me", headers={"authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json()["user"]["name"] == user.name

    # Shown once: closed and opened again, the dialog lists the key but never shows it.
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="API keys").click()
    expect(dialog.get_by_label("Your new key")).to_be_hidden()
    assert key not in dialog.inner_text()
    assert page.locator("#new-key-value").input_value() == ""
    expect(row).to_contain_text("Last used")

    # An unnamed key is listed too.
    dialog.get_by_role("button", name="Create key").click()
    expect(dialog.locator(".key-row", has_text="Unnamed key")).to_have_count(1)

    # Revoke asks first; Cancel changes nothing.
    revoke = row.get_by_role("button", name="Revoke key laptop")
    revoke.click()
    cancel = row.get_by_role("button", name="Cancel")
    expect(cancel).to_be_focused()
    cancel.click()
    expect(revoke).to_be_focused()
    expect(row).to_contain_text("Active")
    revoke.click()
    row.get_by_role("button", name="Revoke", exact=True).click()
    expect(row.locator(".key-revoked")).to_have_text("Revoked")
    expect(row).to_contain_text(re.compile(r"Revoked \S"))
    expect(row.get_by_role("button")).to_have_count(0)
    expect(row).to_be_focused()
    # The other key is untouched.
    expect(dialog.locator(".key-row", has_text="Unnamed key")).to_contain_text("Active")

    with httpx.Client(base_url=accounts_server.url) as client:
        refused = client.get("/api/me", headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "unauthorized"
    keys = accounts_server.store(lambda s: s.list_api_keys(user.id))
    assert [(k.name, k.revoked_at is not None) for k in keys] == [("laptop", True), (None, False)]


def test_with_auth_off_there_is_no_sign_in_and_no_account(browser: Browser, server: str) -> None:
    # The shared server has no user: the page is the single-user page it always was.
    context = browser.new_context(base_url=server)
    violations = watch_csp(context)
    page = context.new_page()
    page.goto("/")
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    expect(page.get_by_role("heading", name="Sign in to streamkeep")).to_be_hidden()
    expect(page.get_by_label("Password")).to_be_hidden()
    expect(page.get_by_role("region", name="Account")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_role("button", name="API keys")).to_be_hidden()
    with httpx.Client(base_url=server) as client:
        assert client.get("/api/me").json() == {"auth": False, "user": None, "key": None}
    context.close()
    assert violations == []


def test_the_page_shows_the_signed_in_users_usage_after_each_reply(
    page: Page, context: BrowserContext, user: UserRecord, accounts_server: AccountsServer
) -> None:
    page.goto("/")
    sign_in(page, user.name)
    expect_signed_in(page, user.name)
    usage = page.locator("#usage")
    expect(usage).to_have_text("0 tokens in · 0 out · 0 replies")

    send(page, "Count me [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    send(page, "And me [[tokens=4]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")

    # The line is the server's own report for this user, refreshed after the reply.
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    with httpx.Client(base_url=accounts_server.url, cookies={SESSION_COOKIE: cookie["value"]}) as c:
        total = c.get("/api/usage", params={"user": user.name}).json()["total"]
    assert total["messages"] == 2 and total["output_tokens"] > 0
    expect(usage).to_have_text(
        f"{total['input_tokens']:,} tokens in · {total['output_tokens']:,} out · 2 replies"
    )
    expect(usage).to_have_attribute("title", re.compile(r"fake/fake-model: \d+ in, \d+ out"))


def test_the_tools_switch_works_signed_in(
    page: Page, context: BrowserContext, user: UserRecord, accounts_server: AccountsServer
) -> None:
    """The list of tools and the chat's changes go with the session cookie."""
    page.goto("/")
    sign_in(page, user.name)
    expect_signed_in(page, user.name)
    button = page.locator("#tools-button")
    button.click()
    calculator = page.get_by_role("checkbox", name="calculator", exact=True)
    calculator.check()
    send(page, "With a calculator [[tokens=3]]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    cid = chat_id(page)
    button.click()
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        page.get_by_role("checkbox", name="current_time", exact=True).check()
    assert patched.value.status == 200
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    with httpx.Client(base_url=accounts_server.url, cookies={SESSION_COOKIE: cookie["value"]}) as c:
        assert c.get(f"/api/chats/{cid}").json()["tools"] == ["calculator", "current_time"]
    expect(button).to_have_accessible_name("Tools: 2 on")
