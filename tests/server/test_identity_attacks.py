"""External identity under attack: tokens, headers and users made to break the rules
(a review's findings and what held). Real uvicorn, SQLite and PostgreSQL, a JWKS over
real HTTP, tokens made with PyJWT."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from tests.server.conftest import Server, ServerFactory
from tests.server.isolation import make_owned
from tests.server.jwks_server import (
    SECRET,
    SigningKey,
    claims,
    ec_key,
    hs_token,
    jwks_server,
    key_token,
    rsa_key,
)
from tests.server.test_jwt_auth import JWT_SETTINGS, bearer
from tests.server.test_trusted_headers import PROXY, as_user, from_address


@pytest.fixture
async def proxied_server(server_factory: ServerFactory) -> Server:
    return await server_factory(trusted_proxies=[f"{PROXY}/32"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_as(key: SigningKey, alg: str, subject: str) -> str:
    """A token whose header names `alg` and `key`'s kid, signed by `key` with its own
    algorithm: what an attacker sends to make the server use a key with another
    algorithm than its kind."""
    genuine = key_token(key, subject)
    _, payload, signature = genuine.split(".")
    header = _b64(json.dumps({"alg": alg, "kid": key.kid, "typ": "JWT"}).encode())
    return f"{header}.{payload}.{signature}"


async def test_a_token_naming_a_key_of_another_kind_is_a_401_not_a_500(
    server_factory: ServerFactory,
) -> None:
    rs, es = rsa_key("rs-1"), ec_key("es-1")
    async with jwks_server(rs, es) as jwks:
        server = await server_factory(jwt_jwks_url=jwks.url, **JWT_SETTINGS)
        # The JWKS is public: anyone can name its EC key with RS256, or its RSA key
        # with ES256 (both allowed by default).
        for token in (signed_as(es, "RS256", "eve"), signed_as(rs, "ES256", "eve")):
            async with bearer(server, token) as client:
                r = await client.get("/api/me")
            assert r.status_code == 401, r.text
            assert "cannot verify" in r.json()["error"]["message"]
        # The genuine tokens still work.
        for key in (rs, es):
            async with bearer(server, key_token(key, f"u-{key.kid}")) as client:
                assert (await client.get("/api/me")).status_code == 200
    assert sorted(u.name for u in await server.store.list_users()) == ["u-es-1", "u-rs-1"]


async def test_jwks_alg_confusion_and_unsigned_tokens_are_refused(
    server_factory: ServerFactory,
) -> None:
    rs = rsa_key("rs-1")
    public_pem = rs.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    async with jwks_server(rs) as jwks:
        server = await server_factory(jwt_jwks_url=jwks.url, **JWT_SETTINGS)
        # HS256 with the RSA public key (PEM) as the secret: the classic confusion.
        # PyJWT refuses to HMAC with a PEM key, so the bytes are signed by hand.
        header = _b64(json.dumps({"alg": "HS256", "kid": "rs-1"}).encode())
        payload = _b64(json.dumps(claims("eve")).encode())
        mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        confused = f"{header}.{payload}.{_b64(mac)}"
        unsigned = jwt.encode(claims("eve"), None, algorithm="none", headers={"kid": "rs-1"})
        other_issuer = key_token(rs, "eve", iss="https://other.example")
        other_audience = key_token(rs, "eve", aud="another-service")
        for token in (confused, unsigned, other_issuer, other_audience):
            async with bearer(server, token) as client:
                r = await client.get("/api/me")
            assert r.status_code == 401, r.text
    assert await server.store.list_users() == []


async def test_a_token_user_is_never_a_local_user_nor_an_admin(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(jwt_secret=SECRET, **JWT_SETTINGS)
    admin = await server.store.create_user("admin", "a long password", is_admin=True)
    _, key = await server.store.create_api_key(admin.id)
    async with bearer(server, key) as real_admin:
        owned = await make_owned(real_admin)
    # A token whose sub and name are the admin's name and id, with admin-ish claims.
    for sub in ("admin", admin.id):
        token = hs_token(sub, preferred_username="admin", is_admin=True, groups=["admin"])
        async with bearer(server, token) as client:
            me = (await client.get("/api/me")).json()["user"]
            assert me["id"] != admin.id and me["name"] != "admin"
            assert me["is_admin"] is False
            assert (await client.get(f"/api/chats/{owned.chat_id}")).status_code == 404
            assert (await client.get("/api/admin/users")).status_code in (403, 404)
    # The password sign-in does not reach a token user (they have no password).
    r = await server.client.post(
        "/api/auth/login", json={"name": me["name"], "password": "anything"}
    )
    assert r.status_code == 401


async def test_one_subject_of_two_issuers_is_two_users(server_factory: ServerFactory) -> None:
    """A JWT's subject and a proxy header's value that are equal name two users."""
    server = await server_factory(
        jwt_secret=SECRET, trusted_proxies=[f"{PROXY}/32"], **JWT_SETTINGS
    )
    async with bearer(server, hs_token("sam")) as token_sam:
        owned = await make_owned(token_sam)
        token_id = (await token_sam.get("/api/me")).json()["user"]["id"]
    async with from_address(server, PROXY, as_user("sam")) as header_sam:
        me = (await header_sam.get("/api/me")).json()["user"]
        assert me["id"] != token_id and me["issuer"] == "trusted-header"
        assert (await header_sam.get(f"/api/chats/{owned.chat_id}")).status_code == 404


async def test_odd_header_values_from_the_proxy(proxied_server: Server) -> None:
    server = proxied_server
    cases: dict[str, tuple[str, int]] = {
        "too long": ("x" * 300, 401),
        "control characters": ("ann\x01ie", 400),  # uvicorn (h11) refuses it
    }
    for case, (value, status) in cases.items():
        async with from_address(server, PROXY, {"x-forwarded-user": value}) as client:
            r = await client.get("/api/me")
        assert r.status_code == status, (case, r.text)
    # Non-ASCII bytes (latin-1 as Starlette reads them): a user, the same one again.
    raw = "zoë".encode()
    async with from_address(server, PROXY, {}) as client:
        first = await client.get("/api/me", headers=[(b"x-forwarded-user", raw)])
        again = await client.get("/api/me", headers=[(b"x-forwarded-user", raw)])
    assert first.status_code == 200, first.text
    assert first.json()["user"]["id"] == again.json()["user"]["id"]


async def test_x_forwarded_for_does_not_make_a_peer_a_proxy(proxied_server: Server) -> None:
    forged = {**as_user("carol"), "x-forwarded-for": PROXY, "forwarded": f"for={PROXY}"}
    async with from_address(proxied_server, "127.0.0.1", forged) as client:
        r = await client.get("/api/me")
    assert r.status_code == 401, r.text
    assert await proxied_server.store.list_users() == []


async def test_an_api_key_with_a_proxy_header_is_the_keys_user(proxied_server: Server) -> None:
    robot = await proxied_server.store.create_user("robot", None)
    _, key = await proxied_server.store.create_api_key(robot.id)
    headers = {**as_user("carol"), "authorization": f"Bearer {key}"}
    async with from_address(proxied_server, PROXY, headers) as client:
        assert (await client.get("/api/me")).json()["user"]["name"] == "robot"


async def test_a_cached_token_stops_working_when_its_user_is_disabled(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(jwt_secret=SECRET, **JWT_SETTINGS)
    token = hs_token("dora")
    async with bearer(server, token) as client:
        user_id = (await client.get("/api/me")).json()["user"]["id"]
        await server.store.disable_user(user_id)
        assert (await client.get("/api/me")).status_code == 401
        # The same bytes with one character of the signature changed: not the cached one.
    head, body, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    async with bearer(server, f"{head}.{body}.{flipped}") as client:
        r = await client.get("/api/me")
    assert r.status_code == 401
    assert "signature" in r.json()["error"]["message"]


async def test_a_huge_token_is_refused_cleanly(server_factory: ServerFactory) -> None:
    server = await server_factory(jwt_secret=SECRET, **JWT_SETTINGS)
    token = hs_token("big", padding="x" * 12_000)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        r = await client.get("/api/me", headers={"authorization": f"Bearer {token}"})
    assert r.status_code in (200, 400, 401, 431), r.text


async def test_token_users_reach_none_of_each_others_gateway_calls_or_usage(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(jwt_secret=SECRET, **JWT_SETTINGS)
    async with (
        bearer(server, hs_token("u-ann")) as ann,
        bearer(server, hs_token("u-ben")) as ben,
    ):
        body = {"model": "fake/fake-model", "input": "hi"}
        r = await ann.post("/v1/responses", json=body)
        assert r.status_code == 200, r.text
        response_id = r.json()["id"]
        chat_id = r.headers["x-streamkeep-chat-id"]
        for method, path in (
            ("GET", f"/v1/responses/{response_id}"),
            ("DELETE", f"/v1/responses/{response_id}"),
        ):
            other = await ben.request(method, path)
            assert other.status_code == 404, (method, other.text)
        r = await ben.post("/v1/responses", json={**body, "previous_response_id": response_id})
        assert r.status_code == 404, r.text
        messages = {
            "model": "fake/fake-model",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
        }
        r = await ben.post("/v1/messages", json=messages, headers={"x-streamkeep-chat-id": chat_id})
        assert r.status_code == 404, r.text

        assert (await ben.get("/api/usage", params={"group_by": "user"})).json()["items"] == []
        r = await ben.get("/api/usage", params={"group_by": "user", "user": "u-ann"})
        assert r.status_code == 404, r.text
        mine = (await ann.get("/api/usage", params={"group_by": "user"})).json()["items"]
        assert [i["group"] for i in mine] == ["u-ann"]
        assert (await ann.get(f"/v1/responses/{response_id}")).status_code == 200


async def test_a_jwks_that_fails_is_asked_at_most_once_per_interval(
    server_factory: ServerFactory,
) -> None:
    """Before any set was fetched, a failing JWKS was asked again by every request with
    a JWT (anyone can send one): with an issuer that hangs, each waited its timeout in
    turn behind the fetch lock."""
    asked = 0

    async def failing(_: web.Request) -> web.Response:
        nonlocal asked
        asked += 1
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/jwks.json", failing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    try:
        server = await server_factory(jwt_jwks_url=url, jwks_refresh_interval=3600, **JWT_SETTINGS)
        key = rsa_key("k1")
        for n in range(4):
            async with bearer(server, key_token(key, f"u-{n}")) as client:
                r = await client.get("/api/me")
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "identity_unavailable"
            assert "could not be fetched" in r.json()["error"]["message"]
        assert asked == 1
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_a_cached_token_is_refused_once_expired(server_factory: ServerFactory) -> None:
    """The verified-token cache keeps a token until its `exp` plus the leeway only."""
    server = await server_factory(jwt_secret=SECRET, jwt_leeway=0, **JWT_SETTINGS)
    exp = int(time.time()) + 3
    async with bearer(server, hs_token("u-short", exp=exp)) as client:
        assert (await client.get("/api/me")).status_code == 200  # verified, now cached
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.5)
        r = await client.get("/api/me")
    assert r.status_code == 401, r.text
    assert "expired" in r.json()["error"]["message"]
