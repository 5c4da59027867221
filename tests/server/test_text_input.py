"""Text UTF-8 cannot encode (a lone surrogate, `"\\ud800"` in valid JSON) or holding NUL
is refused at every entry point, naming the field, and changes nothing: no row, no
provider call. Bodies are sent as the JSON text a client would send (`json.dumps`
writes a lone surrogate as its escape)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.server.conftest import MODEL, Server
from tests.server.sse import read_all

BAD = "a \ud800 b"


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as "\ud800"
    assert "\\ud800" in raw or "\\u0000" in raw
    return await client.post(path, content=raw, headers={"content-type": "application/json"})


async def snapshot(server: Server) -> list[Any]:
    """Every chat with its branch: what a refused request must leave as it was."""
    chats = (await server.client.get("/api/chats")).json()["items"]
    return [(await server.client.get(f"/api/chats/{c['id']}")).json() for c in chats]


async def test_chat_api_refuses_bad_text_everywhere_with_422(server: Server) -> None:
    c = server.client
    chat = await server.new_chat(title="kept")
    async with c.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "first"}
    ) as r:
        await read_all(r)
    user = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][0]
    before = await snapshot(server)
    asked = len(server.upstream.requests)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/api/chats", {"title": BAD}, "title"),
        ("POST", "/api/chats", {"system": BAD}, "system"),
        ("POST", "/api/chats", {"model": BAD}, "model"),
        ("POST", "/api/chats", {BAD: "x"}, "body"),  # a key: pydantic refuses it first
        ("PATCH", f"/api/chats/{chat['id']}", {"title": BAD}, "title"),
        ("PATCH", f"/api/chats/{chat['id']}", {"active_leaf_id": BAD}, "active_leaf_id"),
        ("POST", f"/api/chats/{chat['id']}/messages", {"content": BAD}, "content"),
        ("POST", f"/api/chats/{chat['id']}/messages", {"content": "a\x00"}, "content"),
        (
            "POST",
            f"/api/chats/{chat['id']}/messages",
            {"content": "ok", "parent_id": BAD},
            "parent_id",
        ),
        ("POST", f"/api/messages/{user['id']}/edit", {"content": BAD}, "content"),
        (
            "POST",
            "/api/chat",
            {
                "id": "fresh",
                "messages": [{"role": "user", "parts": [{"type": "text", "text": BAD}]}],
            },
            "messages.0.parts.0",
        ),
        (
            "POST",
            "/api/chat",
            {"id": BAD, "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
            "id",
        ),
        (
            "POST",
            "/api/chat",
            {"id": chat["id"], "trigger": "regenerate-message", "messageId": BAD, "messages": []},
            "messageId",
        ),
    ]
    for method, path, body, field in cases:
        raw = json.dumps(body)
        r = await c.request(method, path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, body, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request"
        assert error["field"] == field, (body, error)
        reason = "NUL" if "\x00" in json.loads(raw).get("content", "") else "lone surrogate"
        assert reason in error["message"], error
    assert await snapshot(server) == before
    assert len(server.upstream.requests) == asked


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "a\x00"}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "text", "text": "a\x00"}]}, "messages[0].content"),
        ({"role": "system", "content": "a\x00"}, "messages[0].content"),
    ],
)
async def test_gateway_refuses_nul_naming_the_param(
    server: Server, message: dict[str, Any], param: str
) -> None:
    r = await post(server.client, "/v1/chat/completions", {"model": MODEL, "messages": [message]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert "NUL" in error["message"]
    assert await snapshot(server) == []
    assert server.upstream.requests == []


async def test_gateway_refuses_a_lone_surrogate_anywhere_saying_where(server: Server) -> None:
    calls = [
        {"role": "user", "content": BAD},
        {
            "role": "user",
            "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": BAD}],
        },
        {"role": "system", "content": BAD},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ]
    tool_reply = {"role": "tool", "tool_call_id": "c1", "content": BAD}
    for messages in (
        [calls[0]],
        [calls[1]],
        [calls[2], {"role": "user", "content": "hi"}],
        [
            {"role": "user", "content": "hi"},
            calls[3],
            tool_reply,
        ],
    ):
        body = {"model": MODEL, "messages": messages}
        r = await post(server.client, "/v1/chat/completions", body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        # orjson refuses the escape while parsing: the message says where it is.
        at = json.dumps(body).index("\\ud800")
        assert error["message"] == (
            "The request body is not valid JSON: no low surrogate in string: "
            f"line 1 column {at + 1} (char {at})"
        ), error
    assert await snapshot(server) == []
    assert server.upstream.requests == []
