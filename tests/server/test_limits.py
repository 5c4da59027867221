"""The same limits on every entry point, before anything is stored or sent: a body over
`max_body_bytes` (declared or counted as it arrives) and a message over
`max_message_chars` are a 413, the chats stay as they were and the provider hears
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import MODEL, Server, ServerFactory

BODY_LIMIT = 4000
CHARS = 50


@pytest.fixture
async def limited(server_factory: ServerFactory) -> Server:
    return await server_factory(max_body_bytes=BODY_LIMIT, max_message_chars=CHARS)


async def nothing_changed(server: Server, chats: list[dict[str, Any]]) -> None:
    listed = (await server.client.get("/api/chats")).json()["items"]
    assert [c["id"] for c in listed] == [c["id"] for c in chats]
    for chat in chats:
        assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
    assert server.upstream.requests == []


def too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.json() == {
        "error": {
            "type": "request_too_large",
            "message": f"the request body is larger than the limit of {BODY_LIMIT} bytes",
            "param": None,
            "code": "request_too_large",
        }
    }


def big_body(path: str, chat_id: str) -> dict[str, Any]:
    filler = "x" * BODY_LIMIT
    if path == "/api/chat":
        return {"id": "new-chat", "messages": [], "padding": filler}
    if path.startswith("/v1/"):
        return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "pad": filler}
    return {"content": filler}


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def test_a_body_over_the_limit_is_413_on_every_entry_point(limited: Server) -> None:
    chat = await limited.new_chat()
    paths = [
        f"/api/chats/{chat['id']}/messages",
        "/api/chat",
        "/v1/chat/completions",
        "/api/chats",
        f"/api/chats/{chat['id']}/stop",  # a route that never reads its body
    ]
    for path in paths:
        body = httpx.Request("POST", "http://x", json=big_body(path, chat["id"])).content
        assert len(body) > BODY_LIMIT
        declared = await limited.client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        too_large(declared)
        # No Content-Length: counted as it arrives, refused once over.
        chunked = await limited.client.post(
            path, content=chunks(body), headers={"content-type": "application/json"}
        )
        assert "content-length" not in chunked.request.headers
        if path.endswith("/stop"):
            assert chunked.status_code == 200  # it reads no body: nothing to count
            continue
        too_large(chunked)
    await nothing_changed(limited, [chat])
    # Under the limit, the same server answers.
    r = await limited.client.post("/api/chats", json={"title": "t" * 100})
    assert r.status_code == 201


async def test_a_message_over_max_message_chars_is_413_on_every_entry_point(
    limited: Server,
) -> None:
    chat = await limited.new_chat()
    long = "y" * (CHARS + 1)
    r = await limited.client.post(f"/api/chats/{chat['id']}/messages", json={"content": long})
    assert (r.status_code, r.json()["error"]["type"]) == (413, "message_too_long")
    r = await limited.client.post("/api/chats", json={"system": long})
    assert (r.status_code, r.json()["error"]["type"]) == (413, "message_too_long")
    body = {
        "id": "fresh",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": long}]}],
    }
    r = await limited.client.post("/api/chat", json=body)
    assert (r.status_code, r.json()["error"]["type"]) == (413, "message_too_long")
    await nothing_changed(limited, [chat])


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "y" * (CHARS + 1)}], "messages[0].content"),
        (  # parts that are short each, over the limit together
            [{"role": "user", "content": [{"type": "text", "text": "y" * 30}] * 2}],
            "messages[0].content",
        ),
        (
            [{"role": "system", "content": "y" * (CHARS + 1)}, {"role": "user", "content": "hi"}],
            "messages[0].content",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": "' + "y" * CHARS + '"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "ok"},
                {"role": "tool", "tool_call_id": "c1", "content": "y" * (CHARS + 1)},
            ],
            "messages[3].content",
        ),
    ],
)
async def test_the_gateway_refuses_an_over_long_message_before_storing_or_asking(
    limited: Server, messages: list[dict[str, Any]], param: str
) -> None:
    for stream in (False, True):
        body = {"model": MODEL, "messages": messages, "stream": stream}
        r = await limited.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "message_too_long",
            param,
        )
        assert f"the limit is {CHARS}" in error["message"]
    await nothing_changed(limited, [])
