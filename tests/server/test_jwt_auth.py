"""JWT bearer tokens from a product's own auth: a shared secret (HS256) and a JWKS
served over HTTP (RS256, ES256). Real uvicorn, SQLite and PostgreSQL, the fake
upstream; tokens made with PyJWT."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest

from tests.server.conftest import Server, ServerFactory
from tests.server.isolation import SLOW, make_owned, probe
from tests.server.jwks_server import (
    AUDIENCE,
    ISSUER,
    SECRET,
    claims,
    ec_key,
    hs_token,
    jwks_server,
    key_token,
    rsa_key,
)
from tests.server.sse import read_all, text_of

JWT_SETTINGS: dict[str, Any] = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}


@asynccontextmanager
async def bearer(server: Server, token: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=headers) as client:
        yield client


def ui_body(chat_id: str, text: str) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "trigger": "submit-message", "messages": [message]}


async def stream_and_resume(client: httpx.AsyncClient, chat_id: str) -> str:
    """A slow reply through useChat's POST /api/chat, resumed meanwhile through
    GET /api/chat/{id}/stream from its first event; both read whole. The text."""
    async with client.stream("POST", "/api/chat", json=ui_body(chat_id, SLOW)) as live:
        assert live.status_code == 200, await live.aread()
        headers = {"last-event-id": "1"}
        async with client.stream("GET", f"/api/chat/{chat_id}/stream", headers=headers) as again:
            assert again.status_code == 200, await again.aread()
            resumed = await read_all(again)
        whole = await read_all(live)
    assert whole[-1].type == "[DONE]" and resumed[-1].type == "[DONE]"
    assert resumed[0].seq == 2  # exactly after the event it named
    assert text_of(resumed) and text_of(whole).endswith(text_of(resumed))
    return text_of(whole)


@pytest.fixture
async def hs_server(server_factory: ServerFactory) -> Server:
    return await server_factory(jwt_secret=SECRET, **JWT_SETTINGS)


async def test_a_shared_secret_token_streams_and_resumes_as_its_user(hs_server: Server) -> None:
    async with (
        bearer(hs_server, hs_token("u-alice")) as alice,
        bearer(hs_server, hs_token("u-bob")) as bob,
    ):
        me = (await alice.get("/api/me")).json()
        assert me["auth"] is True and me["key"] is None
        assert me["user"]["name"] == "u-alice"
        assert me["user"]["issuer"] == ISSUER
        assert me["user"]["email"] == "u-alice@product.example"

        await stream_and_resume(alice, "product-chat-1")
        chats = (await alice.get("/api/chats")).json()["items"]
        assert [c["id"] for c in chats] == ["product-chat-1"]
        assert (await bob.get("/api/chats")).json()["items"] == []
        for r in (
            await bob.get("/api/chats/product-chat-1"),
            await bob.get("/api/chat/product-chat-1/stream"),
        ):
            assert r.status_code == 404, r.text
        await probe(bob, alice, await make_owned(alice))

    # One user per subject, whatever the number of tokens; a fresh token is the same user.
    users = await hs_server.store.list_users()
    assert sorted(u.name for u in users) == ["u-alice", "u-bob"]
    async with bearer(hs_server, hs_token("u-alice", exp=int(time.time()) + 60)) as again:
        assert (await again.get("/api/me")).json()["user"]["id"] == me["user"]["id"]


async def test_bad_tokens_are_401s_that_say_why_and_create_nobody(hs_server: Server) -> None:
    now = int(time.time())
    cases = {
        "expired": (hs_token("eve", exp=now - 120), "expired"),
        "not yet valid": (hs_token("eve", nbf=now + 600), "not valid yet"),
        "wrong audience": (hs_token("eve", aud="another-service"), "audience"),
        "wrong issuer": (hs_token("eve", iss="https://evil.example"), "issuer"),
        "wrong secret": (hs_token("eve", secret="x" * 40), "signature does not verify"),
        "no exp": (hs_token("eve", exp=None), "no `exp` claim"),
        "no sub": (hs_token("eve", sub=None), "no `sub` claim"),
        "not a JWT": ("abc.def.ghi", "not a valid JWT"),
    }
    for case, (token, words) in cases.items():
        async with bearer(hs_server, token) as client:
            r = await client.get("/api/chats")
        assert r.status_code == 401, (case, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        error = r.json()["error"]
        assert error["type"] == "unauthorized"
        assert words in error["message"], (case, error)
    assert await hs_server.store.list_users() == []


async def test_an_unsigned_or_public_key_token_is_refused_by_a_secret_server(
    hs_server: Server,
) -> None:
    # alg "none", and an RS256 token: neither is what the secret checks.
    unsigned = jwt.encode(claims("eve"), None, algorithm="none")
    for token in (unsigned, key_token(rsa_key("k"), "eve")):
        async with bearer(hs_server, token) as client:
            r = await client.get("/api/me")
        assert r.status_code == 401, r.text
        assert "this server takes HS256" in r.json()["error"]["message"]


async def test_api_keys_and_their_users_still_work_beside_jwts(hs_server: Server) -> None:
    user = await hs_server.store.create_user("robot", None)
    _, key = await hs_server.store.create_api_key(user.id)
    async with bearer(hs_server, key) as robot:
        r = await robot.get("/api/me")
        assert r.status_code == 200
        assert r.json()["user"]["name"] == "robot" and r.json()["key"] is not None
        robots = await make_owned(robot)
    async with bearer(hs_server, hs_token("robot")) as product_robot:
        # Another identity with a taken name: its own user, named apart.
        me = (await product_robot.get("/api/me")).json()["user"]
        assert me["id"] != user.id and me["name"].startswith("robot-")
        assert (await product_robot.get(f"/api/chats/{robots.chat_id}")).status_code == 404


async def test_a_disabled_users_tokens_are_refused(hs_server: Server) -> None:
    async with bearer(hs_server, hs_token("mallory")) as client:
        user_id = (await client.get("/api/me")).json()["user"]["id"]
        await hs_server.store.disable_user(user_id)
        r = await client.get("/api/me")
    assert r.status_code == 401
    assert "disabled" in r.json()["error"]["message"]


async def test_jwks_tokens_rs256_and_es256_stream_and_resume(
    server_factory: ServerFactory,
) -> None:
    rs, es = rsa_key("rs-1"), ec_key("es-1")
    async with jwks_server(rs, es) as jwks:
        server = await server_factory(jwt_jwks_url=jwks.url, **JWT_SETTINGS)
        async with (
            bearer(server, key_token(rs, "u-rita")) as rita,
            bearer(server, key_token(es, "u-ed")) as ed,
        ):
            await stream_and_resume(rita, "rita-chat")
            await stream_and_resume(ed, "ed-chat")
            assert (await ed.get("/api/chats/rita-chat")).status_code == 404
            assert (await rita.get("/api/chat/ed-chat/stream")).status_code == 404
        # The set was fetched once, and served every token since from the cache.
        assert jwks.fetches == 1

        forged = key_token(rsa_key("rs-1"), "u-rita")  # same kid, another key
        async with bearer(server, forged) as client:
            r = await client.get("/api/me")
        assert r.status_code == 401
        assert "signature does not verify" in r.json()["error"]["message"]


async def test_an_unknown_kid_refetches_the_jwks_at_most_once_per_interval(
    server_factory: ServerFactory,
) -> None:
    old, new = rsa_key("2026-01"), rsa_key("2026-02")
    async with jwks_server(old) as jwks:
        server = await server_factory(
            jwt_jwks_url=jwks.url, jwks_refresh_interval=3600, **JWT_SETTINGS
        )
        async with bearer(server, key_token(old, "u-olga")) as client:
            assert (await client.get("/api/me")).status_code == 200
        assert jwks.fetches == 1
        for _ in range(3):  # made-up kids: no fetch each, within the interval
            async with bearer(server, key_token(rsa_key("made-up"), "u-olga")) as client:
                r = await client.get("/api/me")
            assert r.status_code == 401
            assert "key id 'made-up'" in r.json()["error"]["message"]
        assert jwks.fetches == 1

        # The product rotates its keys: a server that may refetch at once takes the new one.
        jwks.keys.append(new)
        rotating = await server_factory(
            jwt_jwks_url=jwks.url, jwks_refresh_interval=0, **JWT_SETTINGS
        )
        async with bearer(rotating, key_token(old, "u-olga")) as client:
            assert (await client.get("/api/me")).status_code == 200
        fetched = jwks.fetches
        async with bearer(rotating, key_token(new, "u-olga")) as client:
            assert (await client.get("/api/me")).status_code == 200
        assert jwks.fetches == fetched  # the new key came with the first fetch already
        jwks.keys.append(newest := ec_key("2026-03"))
        async with bearer(rotating, key_token(newest, "u-olga")) as client:
            assert (await client.get("/api/me")).json()["user"]["name"] == "u-olga"
        assert jwks.fetches == fetched + 1


async def test_an_unreachable_jwks_is_a_503_not_a_401(server_factory: ServerFactory) -> None:
    key = rsa_key("k1")
    async with jwks_server(key) as jwks:
        url = jwks.url
    server = await server_factory(jwt_jwks_url=url, **JWT_SETTINGS)  # nothing listens
    async with bearer(server, key_token(key, "u-una")) as client:
        r = await client.get("/api/me")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "identity_unavailable"
    assert "could not be fetched" in r.json()["error"]["message"]


async def test_a_token_users_limits_usage_and_gateway_calls_are_theirs(
    server_factory: ServerFactory,
) -> None:
    limits = {"users": {"u-lim": {"requests_per_minute": 3}}}
    server = await server_factory(jwt_secret=SECRET, limits=limits, **JWT_SETTINGS)
    async with (
        bearer(server, hs_token("u-lim")) as limited,
        bearer(server, hs_token("u-free")) as free,
    ):
        body = {"model": "fake/fake-model", "messages": [{"role": "user", "content": "hi"}]}
        r = await free.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        kept = r.headers["x-streamkeep-chat-id"]
        assert (await free.get(f"/api/chats/{kept}")).status_code == 200
        assert (await limited.get(f"/api/chats/{kept}")).status_code == 404
        usage = (await free.get("/api/usage", params={"group_by": "user"})).json()
        assert [(i["group"], i["messages"]) for i in usage["items"]] == [("u-free", 1)]

        # Its 2nd and 3rd requests of the minute (the 404 above was the 1st); the 4th: 429.
        assert (await limited.get("/api/chats")).status_code == 200
        assert (await limited.get("/api/chats")).status_code == 200
        over = await limited.get("/api/chats")
        assert over.status_code == 429, over.text
        assert "u-lim" in over.json()["error"]["message"] and over.headers["retry-after"]
        assert (await free.get("/api/chats")).status_code == 200  # others are not limited
