"""OIDC sign-in over plain HTTP (the browser's part in tests/browser/test_oidc_page.py):
the real provider `oidc-provider-mock` on a loopback thread, the redirects followed by
hand, so each step's answer can be checked. Required group, admin role from a claim
(changing with the claims), and a state that is missing or forged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.oidc_provider import oidc_provider
from tests.server.conftest import Server, ServerFactory

USERS: list[dict[str, Any]] = [
    {
        "sub": "gina-1",
        "preferred_username": "gina",
        "email": "gina@corp.example",
        "groups": ["chat-users", "chat-admins"],
    },
    {"sub": "hal-2", "preferred_username": "hal", "email": "hal@corp.example", "groups": []},
]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with oidc_provider(USERS, tmp_path_factory.mktemp("oidc") / "provider.log") as issuer:
        yield issuer


@pytest.fixture
async def oidc(server_factory: ServerFactory, provider: str) -> Server:
    return await server_factory(
        oidc_issuer=provider,
        oidc_client_id="streamkeep",
        oidc_client_secret="the client's secret",
        oidc_provider_name="Corp",
        oidc_required_group="chat-users",
        oidc_admin_value="chat-admins",
    )


async def sign_in(browser: httpx.AsyncClient, server: Server, subject: str) -> httpx.Response:
    """Through the provider as `subject`, with `browser` (its cookies): the callback's
    answer."""
    start = await browser.get("/api/auth/oidc/login")
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]
    assert query["redirect_uri"] == [f"{server.url}/api/auth/oidc/callback"]
    async with httpx.AsyncClient(timeout=30) as at_provider:
        chosen = await at_provider.post(authorize, data={"sub": subject})
    assert chosen.status_code == 302, chosen.text
    return await browser.get(chosen.headers["location"])


def new_browser(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30)


async def test_a_member_signs_in_and_an_admin_claim_makes_an_admin(oidc: Server) -> None:
    async with new_browser(oidc) as browser:
        back = await sign_in(browser, oidc, "gina-1")
        assert back.status_code == 302, back.text
        assert back.headers["location"] == "/"
        me = (await browser.get("/api/me")).json()["user"]
        assert (me["name"], me["email"], me["is_admin"]) == ("gina", "gina@corp.example", True)
        r = await browser.post("/api/chats", json={}, headers={"origin": oidc.url})
        assert r.status_code == 201
        assert "streamkeep_oidc=" in back.headers["set-cookie"]  # the state cookie cleared


async def test_the_admin_role_follows_the_claims_at_each_sign_in(
    oidc: Server, provider: str
) -> None:
    claims: dict[str, Any] = {"preferred_username": "ivy", "email": "ivy@corp.example"}
    async with httpx.AsyncClient() as admin_of_provider:
        await admin_of_provider.put(
            f"{provider}/users/ivy-3", json={**claims, "groups": ["chat-users", "chat-admins"]}
        )
    async with new_browser(oidc) as browser:
        back = await sign_in(browser, oidc, "ivy-3")
    assert back.status_code == 302
    ivy = await oidc.store.find_external_user(provider, "ivy-3")
    assert ivy is not None and ivy.is_admin
    async with httpx.AsyncClient() as admin_of_provider:
        await admin_of_provider.put(
            f"{provider}/users/ivy-3", json={**claims, "groups": ["chat-users"]}
        )
    async with new_browser(oidc) as browser:
        back = await sign_in(browser, oidc, "ivy-3")
    assert back.status_code == 302
    again = await oidc.store.get_user(ivy.id)
    assert not again.is_admin


async def test_someone_outside_the_required_group_is_refused(oidc: Server) -> None:
    async with new_browser(oidc) as browser:
        back = await sign_in(browser, oidc, "hal-2")
        assert back.status_code == 403, back.text
        assert back.json()["error"] == {
            "type": "forbidden",
            "message": "only members of 'chat-users' may sign in here",
        }
        assert (await browser.get("/api/me")).status_code == 401
    assert await oidc.store.list_users() == []


async def test_a_callback_with_a_forged_or_missing_state_is_refused(oidc: Server) -> None:
    browser = httpx.AsyncClient(base_url=oidc.url, timeout=30)
    async with browser:
        start = await browser.get("/api/auth/oidc/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        r = await browser.get(f"/api/auth/oidc/callback?code=x&state={state}x")
        assert r.status_code == 401
        assert "sign-in with Corp failed" in r.json()["error"]["message"]
        browser.cookies.set("streamkeep_oidc", "tampered", path="/api/auth/oidc")
        r = await browser.get(f"/api/auth/oidc/callback?code=x&state={state}")
        assert r.status_code == 401
        r = await browser.get("/api/auth/oidc/callback?error=access_denied")
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "Corp did not sign you in: access_denied"


async def test_without_oidc_its_routes_are_404s(server: Server) -> None:
    await server.store.create_user("x", "pw")
    for path in ("/api/auth/oidc/login", "/api/auth/oidc/callback"):
        assert (await server.client.get(path)).status_code == 404
    methods = (await server.client.get("/api/auth/methods")).json()
    assert methods == {"password": True, "oidc": None}


async def test_allowed_domains_take_only_a_verified_email_of_exactly_that_domain(
    server_factory: ServerFactory, provider: str
) -> None:
    server = await server_factory(
        oidc_issuer=provider,
        oidc_client_id="streamkeep",
        oidc_client_secret="the client's secret",
        oidc_provider_name="Corp",
        oidc_allowed_domains=["corp.example"],
    )
    cases: dict[str, tuple[dict[str, Any], int]] = {
        # Many providers let anyone register any email, unverified.
        "unverified": ({"email": "mal@corp.example", "email_verified": False}, 403),
        "unverified, as a string": ({"email": "mal@corp.example", "email_verified": "false"}, 403),
        "two @": ({"email": "mal@corp.example@evil.example", "email_verified": True}, 403),
        "a subdomain": ({"email": "mal@sub.corp.example", "email_verified": True}, 403),
        "a suffix": ({"email": "mal@corp.example.evil.example", "email_verified": True}, 403),
        "no email": ({}, 403),
        "upper case, verified": ({"email": "Ann@CORP.example", "email_verified": True}, 302),
        "no email_verified claim": ({"email": "bo@corp.example"}, 302),
    }
    for number, (case, (email_claims, status)) in enumerate(cases.items()):
        sub = f"probe-{number}"
        async with httpx.AsyncClient() as admin_of_provider:
            r = await admin_of_provider.put(
                f"{provider}/users/{sub}", json={"preferred_username": sub, **email_claims}
            )
            assert r.status_code < 300, r.text
        async with new_browser(server) as browser:
            back = await sign_in(browser, server, sub)
            assert back.status_code == status, (case, back.text)
            signed_in = (await browser.get("/api/me")).status_code == 200
            assert signed_in == (status == 302), case
    names = sorted(u.name for u in await server.store.list_users())
    assert names == ["probe-6", "probe-7"]
