"""Accounts on one process: auth turning on, credentials, sign-in, keys, isolation.

Real uvicorn, real SQLite and PostgreSQL (the `server` fixture), the fake upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from streamkeep.http.auth import AuthGate
from tests.server.conftest import Server, ServerFactory
from tests.server.isolation import SLOW, make_owned, probe
from tests.server.sse import read_all

PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    name: str
    user_id: str
    key: str
    client: httpx.AsyncClient  # sends the key


@pytest.fixture
async def accounts(server: Server) -> AsyncIterator[dict[str, Account]]:
    made: dict[str, Account] = {}
    for name in ("alice", "bob"):
        user = await server.store.create_user(name, PASSWORD)
        _, key = await server.store.create_api_key(user.id, name="tests")
        client = httpx.AsyncClient(
            base_url=server.url, timeout=30, headers={"authorization": f"Bearer {key}"}
        )
        made[name] = Account(name, user.id, key, client)
    yield made
    for account in made.values():
        await account.client.aclose()


async def test_single_user_default_needs_no_credentials_until_a_user_exists(
    server: Server,
) -> None:
    r = await server.client.get("/api/me")
    assert r.json() == {"auth": False, "user": None, "key": None}
    chat = await server.new_chat()
    assert (await server.client.get(f"/api/chats/{chat['id']}")).status_code == 200

    await server.store.create_user("alice", PASSWORD)
    r = await server.client.get(f"/api/chats/{chat['id']}")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["type"] == "unauthorized"
    assert "streamkeep keys create" in r.json()["error"]["message"]


async def test_a_worker_that_cannot_tell_whether_users_exist_lets_nobody_in(
    server: Server, accounts: dict[str, Account]
) -> None:
    # A worker that has not yet seen a user (just started), while the database is away:
    # it must not take the requests for the single user's, who may read every chat.
    store = server.store
    count_users = store.count_users

    async def database_away() -> int:
        raise OperationalError("SELECT count(*) FROM users", {}, ConnectionRefusedError())

    store.count_users = database_away  # type: ignore[method-assign]
    server.app.state.auth = AuthGate(store, forced_off=False)
    for method, path in (("GET", "/api/me"), ("GET", "/v1/models"), ("GET", "/api/chats")):
        r = await server.client.request(method, path)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"]["type"] == "database_unavailable"
    store.count_users = count_users  # type: ignore[method-assign]
    assert (await server.client.get("/api/me")).status_code == 401
    assert (await accounts["alice"].client.get("/api/me")).json()["user"]["name"] == "alice"


async def test_every_api_route_refuses_a_request_without_credentials(
    server: Server, accounts: dict[str, Account]
) -> None:
    open_paths = {
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/methods",  # how to sign in: asked before signing in
        "/api/auth/oidc/login",  # 404 unless OIDC is configured, then the way in
        "/api/auth/oidc/callback",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    refused = []
    paths = (await server.client.get("/openapi.json")).json()["paths"]
    for path, operations in paths.items():
        if not path.startswith(("/api/", "/v1/")) or path in open_paths:
            continue
        concrete = path.replace("{", "").replace("}", "")  # {chat_id} -> chat_id
        for method in operations:
            r = await server.client.request(method.upper(), concrete, json={})
            refused.append((method, path, r.status_code))
    assert refused and all(status == 401 for _, _, status in refused), refused


async def test_a_bad_or_revoked_key_and_a_disabled_user_are_refused(
    server: Server, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    assert (await alice.client.get("/api/me")).json()["user"]["name"] == "alice"
    for headers in (
        {"authorization": "Bearer sk-keep-notakey"},
        {"authorization": "Basic YWxpY2U6eA=="},
        {"authorization": f"Bearer {alice.key}x"},
    ):
        r = await server.client.get("/api/chats", headers=headers)
        assert r.status_code == 401, headers
    # The Anthropic SDK's header works too.
    r = await server.client.get("/api/me", headers={"x-api-key": alice.key})
    assert r.json()["user"]["name"] == "alice"

    keys = (await alice.client.get("/api/keys")).json()["items"]
    assert (await alice.client.delete(f"/api/keys/{keys[0]['id']}")).status_code == 204
    assert (await alice.client.get("/api/me")).status_code == 401

    bob = accounts["bob"]
    await server.store.disable_user(bob.user_id)
    assert (await bob.client.get("/api/me")).status_code == 401


async def test_two_users_see_nothing_of_each_other(
    server: Server, accounts: dict[str, Account]
) -> None:
    alice, bob = accounts["alice"].client, accounts["bob"].client
    owned = await make_owned(alice)
    await probe(bob, alice, owned)
    # and the other way round, with bob's own chat
    await probe(alice, bob, await make_owned(bob))


async def test_a_live_generation_cannot_be_resumed_or_stopped_by_another_user(
    server: Server, accounts: dict[str, Account]
) -> None:
    alice, bob = accounts["alice"].client, accounts["bob"].client
    chat_id = (await alice.post("/api/chats", json={})).json()["id"]
    async with alice.stream(
        "POST", f"/api/chats/{chat_id}/messages", json={"content": SLOW}
    ) as live:
        assert live.status_code == 200
        for r in (
            await bob.get(f"/api/chats/{chat_id}/stream", headers={"last-event-id": "1"}),
            await bob.post(f"/api/chats/{chat_id}/stop"),
        ):
            assert r.status_code == 404, r.text
        # Bob cannot join it by its idempotency key either: keys live in a chat.
        async with alice.stream("GET", f"/api/chats/{chat_id}/stream") as resumed:
            assert resumed.status_code == 200
        whole = await read_all(live)
    assert whole[-1].type == "[DONE]"
    finish = [e for e in whole if e.type == "finish"]
    assert finish and finish[0].data.get("finishReason") == "stop"  # nobody stopped it


async def test_sign_in_sign_out_and_keys_from_a_session(
    server: Server, accounts: dict[str, Account]
) -> None:
    page = httpx.AsyncClient(base_url=server.url, timeout=30)
    try:
        r = await page.post("/api/auth/login", json={"name": "alice", "password": "wrong"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        r = await page.post("/api/auth/login", json={"name": "nobody", "password": PASSWORD})
        assert r.status_code == 401

        r = await page.post("/api/auth/login", json={"name": "alice", "password": PASSWORD})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"].lower()
        for attribute in ("httponly", "samesite=strict", "path=/", "max-age=1209600"):
            assert attribute in cookie
        assert "secure" not in cookie  # plain http on loopback
        assert (await page.get("/api/me")).json()["user"]["name"] == "alice"

        r = await page.post("/api/keys", json={"name": "laptop"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["key"].startswith("sk-keep-")
        assert created["key"].startswith(created["prefix"])
        listed = (await page.get("/api/keys")).json()["items"]
        assert created["id"] in [k["id"] for k in listed]
        assert all("key" not in k and "key_hash" not in k for k in listed)
        r = await server.client.get(
            "/api/me", headers={"authorization": f"Bearer {created['key']}"}
        )
        assert r.json()["key"]["name"] == "laptop"

        # Bob's key ids are not alice's to revoke.
        bob_keys = (await accounts["bob"].client.get("/api/keys")).json()["items"]
        assert (await page.delete(f"/api/keys/{bob_keys[0]['id']}")).status_code == 404
        assert (await accounts["bob"].client.get("/api/me")).status_code == 200

        token = page.cookies["streamkeep_session"]
        assert (await page.post("/api/auth/logout")).status_code == 204
        assert "streamkeep_session" not in page.cookies
        # The old cookie no longer works anywhere: the session is revoked server-side.
        r = await server.client.get("/api/me", headers={"cookie": f"streamkeep_session={token}"})
        assert r.status_code == 401
        assert "sign in again" in r.json()["error"]["message"]
    finally:
        await page.aclose()


async def test_a_cookie_write_from_another_site_is_refused(
    server: Server, accounts: dict[str, Account]
) -> None:
    page = httpx.AsyncClient(base_url=server.url, timeout=30)
    try:
        await page.post("/api/auth/login", json={"name": "alice", "password": PASSWORD})
        r = await page.post("/api/chats", json={}, headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        assert (await page.get("/api/chats")).json()["items"] == []
        r = await page.post("/api/chats", json={}, headers={"origin": server.url})
        assert r.status_code == 201
    finally:
        await page.aclose()


async def test_a_key_limited_to_some_models_sees_and_uses_only_those(
    server: Server, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    _, key = await server.store.create_api_key(alice.user_id, allowed_models=["other/model"])
    headers = {"authorization": f"Bearer {key}"}
    models = (await server.client.get("/v1/models", headers=headers)).json()["data"]
    assert models == []
    r = await server.client.post(
        "/v1/chat/completions",
        json={"model": "fake/fake-model", "messages": [{"role": "user", "content": "x"}]},
        headers=headers,
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # The chat API: a chat of that model (made with the unrestricted key) is no help.
    chat_id = (await alice.client.post("/api/chats", json={})).json()["id"]
    r = await server.client.post(
        f"/api/chats/{chat_id}/messages", json={"content": "x"}, headers=headers
    )
    assert r.status_code == 404 and r.json()["error"]["type"] == "unknown_model"
    r = await server.client.post("/api/chats", json={"model": "fake/fake-model"}, headers=headers)
    assert r.status_code == 404
    assert len((await alice.client.get("/api/chats")).json()["items"]) == 1

    # Nor can it make itself a key without its limit: a new key gets its models at most.
    r = await server.client.post("/api/keys", json={}, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["allowed_models"] == ["other/model"]
    r = await server.client.post("/api/keys", json={"models": ["fake/fake-model"]}, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["type"] == "unknown_model"
    r = await server.client.post("/api/keys", json={"models": ["other/model"]}, headers=headers)
    assert r.status_code == 201 and r.json()["allowed_models"] == ["other/model"]
    # A key without a limit, or the page, makes keys for any model.
    r = await alice.client.post("/api/keys", json={"models": ["fake/fake-model"]})
    assert r.status_code == 201


async def test_keys_need_a_user_while_auth_is_off(server: Server) -> None:
    r = await server.client.post("/api/keys", json={})
    assert r.status_code == 422
    assert "streamkeep users create" in r.json()["error"]["message"]


async def test_the_gateway_keeps_each_users_calls_as_their_chats(
    server: Server, accounts: dict[str, Account]
) -> None:
    alice, bob = accounts["alice"].client, accounts["bob"].client
    r = await alice.post(
        "/v1/chat/completions",
        json={"model": "fake/fake-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    chat_id = r.headers["x-streamkeep-chat-id"]
    assert chat_id in [c["id"] for c in (await alice.get("/api/chats")).json()["items"]]
    assert (await bob.get("/api/chats")).json()["items"] == []
    assert (await bob.get(f"/api/chats/{chat_id}")).status_code == 404


async def test_password_guessing_is_limited_per_user_name(
    server: Server, accounts: dict[str, Account]
) -> None:
    for _ in range(10):
        r = await server.client.post("/api/auth/login", json={"name": "alice", "password": "x"})
        assert r.status_code == 401
    r = await server.client.post("/api/auth/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "set-cookie" not in r.headers
    r = await server.client.post("/api/auth/login", json={"name": "bob", "password": PASSWORD})
    assert r.status_code == 200


async def test_the_session_cookie_is_secure_when_configured(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(cookie_secure=True)
    await server.store.create_user("alice", PASSWORD)
    r = await server.client.post("/api/auth/login", json={"name": "alice", "password": PASSWORD})
    assert r.status_code == 200
    assert "secure" in r.headers["set-cookie"].lower().split("; ")


async def test_a_worker_that_knew_of_no_user_keeps_serving_the_single_user_through_an_outage(
    server: Server,
) -> None:
    # The app's gate read "no user" at start; the database then goes away. A resume
    # served from memory or Redis must go on as before accounts existed.
    store = server.store
    count_users = store.count_users

    async def database_away() -> int:
        raise OperationalError("SELECT count(*) FROM users", {}, ConnectionRefusedError())

    store.count_users = database_away  # type: ignore[method-assign]
    try:
        r = await server.client.get("/api/me")
        assert r.status_code == 200 and r.json()["auth"] is False
    finally:
        store.count_users = count_users  # type: ignore[method-assign]
