"""Trusted headers from an auth proxy: believed from a peer inside `trusted_proxies`,
ignored (and logged) from any other. Real loopback peers: the server listens on
127.0.0.1 and only 127.0.0.2 is a trusted proxy; a client binds either address as its
source (on Linux all of 127.0.0.0/8 is loopback)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.server.conftest import Server, ServerFactory
from tests.server.isolation import make_owned, probe

PROXY = "127.0.0.2"


@asynccontextmanager
async def from_address(
    server: Server, source: str, headers: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers=headers, transport=transport
    ) as client:
        yield client


def as_user(name: str, email: str | None = None) -> dict[str, str]:
    headers = {"x-forwarded-user": name}
    if email is not None:
        headers["x-forwarded-email"] = email
    return headers


@pytest.fixture
async def proxied(server_factory: ServerFactory) -> Server:
    return await server_factory(trusted_proxies=[f"{PROXY}/32"])


async def test_the_header_names_the_user_from_the_proxys_address(proxied: Server) -> None:
    async with (
        from_address(proxied, PROXY, as_user("carol", "carol@corp.example")) as carol,
        from_address(proxied, PROXY, as_user("dave")) as dave,
    ):
        me = (await carol.get("/api/me")).json()
        assert me["auth"] is True
        assert me["user"]["name"] == "carol" and me["user"]["email"] == "carol@corp.example"
        assert me["user"]["issuer"] == "trusted-header"
        await probe(dave, carol, await make_owned(carol))
        assert (await carol.get("/api/me")).json()["user"]["id"] == me["user"]["id"]
    assert sorted(u.name for u in await proxied.store.list_users()) == ["carol", "dave"]


async def test_the_header_is_ignored_and_logged_from_any_other_address(
    proxied: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async with from_address(proxied, PROXY, as_user("carol")) as carol:
        owned = await make_owned(carol)
    with caplog.at_level(logging.WARNING, logger="streamkeep.http.proxy_identity"):
        async with from_address(proxied, "127.0.0.1", as_user("carol")) as forged:
            for path in ("/api/me", f"/api/chats/{owned.chat_id}"):
                r = await forged.get(path)
                assert r.status_code == 401, r.text
                assert r.json()["error"]["type"] == "unauthorized"
    warnings = [rec.getMessage() for rec in caplog.records]
    assert "ignored X-Forwarded-User from 127.0.0.1: not in trusted_proxies" in warnings
    assert [u.name for u in await proxied.store.list_users()] == ["carol"]


async def test_an_empty_header_from_the_proxy_is_a_401(proxied: Server) -> None:
    async with from_address(proxied, PROXY, as_user("")) as client:
        r = await client.get("/api/me")
    assert r.status_code == 401
    assert "empty X-Forwarded-User" in r.json()["error"]["message"]


async def test_api_keys_still_work_from_anywhere(proxied: Server) -> None:
    user = await proxied.store.create_user("robot", None)
    _, key = await proxied.store.create_api_key(user.id)
    async with from_address(proxied, "127.0.0.1", {"authorization": f"Bearer {key}"}) as robot:
        assert (await robot.get("/api/me")).json()["user"]["name"] == "robot"


async def test_configured_header_names_are_used(server_factory: ServerFactory) -> None:
    server = await server_factory(
        trusted_proxies=["127.0.0.0/30"],
        trusted_user_header="Remote-User",
        trusted_email_header="Remote-Email",
    )
    headers = {"remote-user": "erin", "remote-email": "erin@corp.example"}
    async with from_address(server, PROXY, headers) as erin:
        me = (await erin.get("/api/me")).json()["user"]
    assert (me["name"], me["email"]) == ("erin", "erin@corp.example")
    async with from_address(server, PROXY, as_user("frank")) as frank:
        assert (await frank.get("/api/me")).status_code == 401  # not the configured header
