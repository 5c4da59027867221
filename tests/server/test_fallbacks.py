"""Fallback aliases through the chat API: a model failing before its first content
hands the reply to the next; the stored message says who answered and why others
were skipped. Two fake upstreams on loopback, each its own provider."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from streamkeep.config import ProviderConfig
from tests.fakes.upstream import FakeUpstream, Script
from tests.server.conftest import Server, ServerFactory
from tests.server.sse import Event, read_all, text_of

ALIAS = "fast"
FIRST, SECOND = "one/fake-model", "two/fake-model"
ECHO = "Hello! You said: hi"


def provider(url: str, **settings: Any) -> ProviderConfig:
    # No retries of the same model: each failure moves on at once.
    return ProviderConfig(
        kind="openai", base_url=url, api_key="x", models=["fake-model"], max_retries=0, **settings
    )


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


async def alias_server(
    server_factory: ServerFactory, first_url: str, second_url: str, **first: Any
) -> Server:
    return await server_factory(
        providers={"one": provider(first_url, **first), "two": provider(second_url)},
        aliases={ALIAS: [FIRST, SECOND]},
        model=ALIAS,
    )


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def ask(server: Server, content: str = "hi") -> tuple[list[Event], dict[str, Any]]:
    """Send a message in a new chat; its stream's events and the stored reply (as
    `GET /api/chats/{id}` returns it)."""
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": content}) as r:
        assert r.status_code == 200
        evts = await read_all(r)
    branch = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"]
    return evts, branch[-1]


def metadata(evts: list[Event]) -> dict[str, Any]:
    (meta,) = [e.data["messageMetadata"] for e in evts if e.type == "message-metadata"]
    return dict(meta)


async def test_a_503_hands_the_reply_to_the_next_model(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=503))
    evts, reply = await ask(server)

    assert text_of(evts) == ECHO
    assert [e.type for e in evts if e.type == "error"] == []
    assert len(fake_upstream.requests) == len(second.requests) == 1
    skipped = {
        "model": FIRST,
        "kind": "provider_http_error",
        "status": 503,
        "error": reply["fallbacks"][0]["error"],
    }
    assert "HTTP 503" in skipped["error"]
    assert reply["status"] == "complete"
    assert reply["model"] == ALIAS
    assert reply["answered_by"] == SECOND
    assert reply["fallbacks"] == [skipped]
    meta = metadata(evts)
    assert meta["answeredBy"] == SECOND and meta["fallbacks"] == [skipped]
    assert evts[0].data["messageMetadata"]["model"] == ALIAS


async def test_a_refused_connection_moves_on(
    server_factory: ServerFactory, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, closed_port_url(), second.base_url)
    evts, reply = await ask(server)
    assert text_of(evts) == ECHO
    assert reply["answered_by"] == SECOND
    assert [(f["model"], f["kind"]) for f in reply["fallbacks"]] == [
        (FIRST, "provider_connection_error")
    ]


async def test_a_429_moves_on(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=429, retry_after=30))
    evts, reply = await ask(server)
    assert text_of(evts) == ECHO
    assert reply["answered_by"] == SECOND
    assert [(f["model"], f.get("status")) for f in reply["fallbacks"]] == [(FIRST, 429)]


async def test_a_model_silent_past_its_first_token_timeout_moves_on(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(
        server_factory, fake_upstream.base_url, second.base_url, first_token_timeout=0.3
    )
    fake_upstream.enqueue(Script(hang_before_first_byte=5))
    evts, reply = await ask(server)
    assert text_of(evts) == ECHO
    assert reply["answered_by"] == SECOND
    assert [(f["model"], f["kind"]) for f in reply["fallbacks"]] == [(FIRST, "provider_timeout")]


async def test_when_every_model_fails_the_last_failure_is_the_reply(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=503))
    second.enqueue(Script(status=502))
    evts, reply = await ask(server)

    (error,) = [e.data["errorText"] for e in evts if e.type == "error"]
    assert "HTTP 502" in error
    assert reply["status"] == "error"
    assert reply["error"] == error
    assert reply["answered_by"] == SECOND  # the last one tried: its failure is the reply's
    assert [(f["model"], f.get("status")) for f in reply["fallbacks"]] == [(FIRST, 503)]
    assert metadata(evts)["answeredBy"] == SECOND


async def test_nothing_is_tried_again_after_content_was_sent(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(tokens=8, error_after=3))
    evts, reply = await ask(server)

    assert text_of(evts) != ""  # the first model's words reached the client...
    assert [e.type for e in evts].count("error") == 1  # ...and then its failure
    assert second.requests == []
    assert reply["status"] == "error"
    assert reply["answered_by"] == FIRST and reply["fallbacks"] == []
    assert "".join(p["text"] for p in reply["parts"] if p["type"] == "text") == text_of(evts)


async def test_a_400_is_the_request_s_fault_and_does_not_move_on(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=400))
    evts, reply = await ask(server)

    assert second.requests == []
    assert reply["status"] == "error" and "HTTP 400" in reply["error"]
    assert reply["answered_by"] == FIRST and reply["fallbacks"] == []
    assert [e.type for e in evts].count("error") == 1


async def test_a_404_of_the_first_model_moves_on(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    # A model its provider does not serve (any more) is configuration, not the request.
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=404))
    evts, reply = await ask(server)
    assert text_of(evts) == ECHO
    assert [(f["model"], f.get("status")) for f in reply["fallbacks"]] == [(FIRST, 404)]


async def test_usechat_replies_through_an_alias_keep_the_record(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    fake_upstream.enqueue(Script(status=500))
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": "alias-chat", "trigger": "submit-message", "messages": [message]}
    async with server.client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        evts = await read_all(r)
    assert text_of(evts) == ECHO
    assert metadata(evts)["answeredBy"] == SECOND
    reply = (await server.client.get("/api/chats/alias-chat")).json()["messages"][-1]
    assert reply["answered_by"] == SECOND
    assert [f["status"] for f in reply["fallbacks"]] == [500]


async def test_a_reply_of_a_plain_model_has_no_record(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    chat = await server.new_chat(model=SECOND)
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "hi"}) as r:
        evts = await read_all(r)
    assert "answeredBy" not in metadata(evts)
    reply = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["answered_by"] is None and reply["fallbacks"] is None


async def test_the_alias_is_listed_among_the_models(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    listed = (await server.client.get("/v1/models")).json()["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [
        (FIRST, "one"),
        (SECOND, "two"),
        (ALIAS, "streamkeep"),
    ]


async def test_a_key_limited_to_the_alias_may_use_it_and_not_its_models(
    server_factory: ServerFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    server = await alias_server(server_factory, fake_upstream.base_url, second.base_url)
    user = await server.store.create_user("ada", "correct horse battery staple")
    _, key = await server.store.create_api_key(user.id, name="k", allowed_models=[ALIAS])
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, headers={"authorization": f"Bearer {key}"}
    ) as client:
        listed = (await client.get("/v1/models")).json()["data"]
        assert [m["id"] for m in listed] == [ALIAS]
        messages = [{"role": "user", "content": "hi"}]
        r = await client.post("/v1/chat/completions", json={"model": ALIAS, "messages": messages})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ECHO
        r = await client.post("/v1/chat/completions", json={"model": FIRST, "messages": messages})
        assert r.status_code == 404
