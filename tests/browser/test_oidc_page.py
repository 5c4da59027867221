"""OIDC sign-in on the page, in Chromium, through a real OpenID provider:
`oidc-provider-mock` (PyPI; Authlib's provider components in a Flask app), started as
its own process with users whose claims it vouches for. The browser goes to it, picks
the user on its authorization page and comes back signed in to streamkeep.

Password sign-in is off on this server, emails must be of `corp.example`, and members
of the group `streamkeep-admins` are admins.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.pagekit import last_reply, send, watch_csp
from tests.browser.procs import launch_server, stop_process
from tests.conftest import free_port
from tests.oidc_provider import oidc_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROVIDER = "Corp SSO"
USERS = [
    {
        "sub": "alice-0001",
        "preferred_username": "alice",
        "email": "alice@corp.example",
        "groups": ["staff", "streamkeep-admins"],
    },
    {"sub": "bob-0002", "preferred_username": "bob", "email": "bob@corp.example"},
    {"sub": "eve-0003", "preferred_username": "eve", "email": "eve@elsewhere.example"},
]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with oidc_provider(USERS, tmp_path_factory.mktemp("oidc") / "provider.log") as issuer:
        yield issuer


@pytest.fixture(scope="module")
def oidc_server(
    fake_provider: str, provider: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    home = tmp_path_factory.mktemp("oidc-server")
    port = free_port()
    proc = launch_server(
        home,
        fake_provider,
        port,
        STREAMKEEP_OIDC_ISSUER=provider,
        STREAMKEEP_OIDC_CLIENT_ID="streamkeep-page",
        STREAMKEEP_OIDC_CLIENT_SECRET="a client secret the provider issued",
        STREAMKEEP_OIDC_PROVIDER_NAME=PROVIDER,
        STREAMKEEP_OIDC_ALLOWED_DOMAINS="corp.example",
        STREAMKEEP_OIDC_ADMIN_VALUE="streamkeep-admins",
        STREAMKEEP_PASSWORD_LOGIN="false",
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def context(browser: Browser, oidc_server: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=oidc_server, viewport={"width": 1280, "height": 820})
    csp_violations = watch_csp(ctx)
    yield ctx
    ctx.close()
    assert csp_violations == []


def new_page(context: BrowserContext) -> Page:
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def sign_in_with_provider(page: Page, subject: str) -> None:
    """From the page's sign-in screen through the provider and back."""
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to streamkeep")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_hidden()  # password sign-in is off
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    # The authorization request carries PKCE (S256) and a nonce.
    asked = parse_qs(urlsplit(page.url).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
    assert asked["nonce"][0] and asked["client_id"] == ["streamkeep-page"]
    page.get_by_role("button", name=subject, exact=True).click()


def test_users_sign_in_through_the_provider_and_see_only_their_chats(
    context: BrowserContext, browser: Browser, oidc_server: str
) -> None:
    bob = new_page(context)
    sign_in_with_provider(bob, "bob-0002")
    expect(bob.locator("#account-name")).to_have_text("bob")
    send(bob, "bob's secret plan")
    expect(last_reply(bob)).to_contain_text("You said: bob's secret plan")
    expect(bob.locator("#chat-list a")).to_have_count(1)

    # Alice, in a browser of her own.
    other = browser.new_context(base_url=oidc_server, viewport={"width": 1280, "height": 820})
    try:
        alice = new_page(other)
        sign_in_with_provider(alice, "alice-0001")
        expect(alice.locator("#account-name")).to_have_text("alice")
        expect(alice.get_by_role("textbox", name="Message")).to_be_visible()
        expect(alice.locator("#chat-list a")).to_have_count(0)
        send(alice, "alice's note")
        expect(last_reply(alice)).to_contain_text("You said: alice's note")
        expect(alice.locator("#chat-list a")).to_have_count(1)
        expect(alice.get_by_text("bob's secret plan")).to_have_count(0)

        me = alice.request.get("/api/me").json()["user"]
        assert (me["name"], me["email"], me["is_admin"]) == ("alice", "alice@corp.example", True)
        assert me["issuer"].startswith("http://127.0.0.1:")
        bobs = bob.request.get("/api/me").json()["user"]
        assert bobs["is_admin"] is False
        bob_chat = bob.request.get("/api/chats").json()["items"][0]["id"]
        assert alice.request.get(f"/api/chats/{bob_chat}").status == 404
    finally:
        other.close()

    # Signed in again later: the same user, not a new one.
    again = new_page(context)
    again.goto("/")
    expect(again.locator("#account-name")).to_have_text("bob")
    expect(again.locator("#chat-list a")).to_have_count(1)


def test_an_email_outside_the_allowed_domains_is_refused(context: BrowserContext) -> None:
    page = new_page(context)
    sign_in_with_provider(page, "eve-0003")
    expect(page.locator("body")).to_contain_text("eve@elsewhere.example may not sign in here")
    assert page.request.get("/api/me").status == 401


def test_password_sign_in_is_off(oidc_server: str) -> None:
    methods = httpx.get(f"{oidc_server}/api/auth/methods").json()
    assert methods == {
        "password": False,
        "oidc": {"name": PROVIDER, "url": "/api/auth/oidc/login"},
    }
    r = httpx.post(f"{oidc_server}/api/auth/login", json={"name": "alice", "password": "x"})
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "password_login_disabled"


def test_a_callback_without_the_flows_state_is_refused(oidc_server: str) -> None:
    r = httpx.get(f"{oidc_server}/api/auth/oidc/callback?code=forged&state=forged")
    assert r.status_code == 401
    assert "sign-in with Corp SSO failed" in r.json()["error"]["message"]
