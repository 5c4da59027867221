"""A provider's answer holding a lone surrogate escape (`"\\ud800"`: valid JSON, text UTF-8
cannot encode) streams, is stored and reads back with U+FFFD in its place, on SQLite
and PostgreSQL, through the chat API and the gateway."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.upstream import Script
from tests.server.conftest import MODEL, Server
from tests.server.sse import read_all, text_of


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-s", "model": "fake-model", "choices": [{"index": 0, "delta": delta}]}
    body["choices"][0]["finish_reason"] = finish
    return f"data: {json.dumps(body)}\n\n".encode()  # json.dumps: "\ud800" as its escape


def answer_with_surrogates() -> Script:
    return Script(
        raw=[
            chunk({"role": "assistant", "reasoning_content": "thinking \udfff"}),
            chunk({"content": "Hello"}),
            chunk({"content": " \ud800 world"}),
            chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
    )


async def test_chat_api_streams_stores_and_reads_the_repaired_answer(server: Server) -> None:
    c = server.client
    chat = await server.new_chat()
    server.upstream.enqueue(answer_with_surrogates())
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "hi"}) as r:
        assert r.status_code == 200
        events = await read_all(r)
    assert text_of(events) == "Hello \ufffd world"
    assert [e.type for e in events if e.type in ("finish", "error")] == ["finish"]
    reply = (await c.get(f"/api/chats/{chat['id']}")).json()["messages"][-1]
    assert reply["status"] == "complete"
    assert reply["parts"] == [
        {"type": "reasoning", "text": "thinking \ufffd"},
        {"type": "text", "text": "Hello \ufffd world"},
    ]
    assert (await c.get(f"/api/messages/{reply['id']}")).json() == reply
    assert (await c.get("/api/chats")).status_code == 200
    # The chat goes on: the stored answer is sent back to the provider as it is kept.
    async with c.stream("POST", f"/api/chats/{chat['id']}/messages", json={"content": "more"}) as r:
        assert [e.type for e in await read_all(r)][-2:] == ["finish", "[DONE]"]
    sent = server.upstream.requests[-1]["messages"]
    assert sent[-2] == {"role": "assistant", "content": "Hello \ufffd world"}


async def test_gateway_answers_and_stores_the_repaired_answer(server: Server) -> None:
    server.upstream.enqueue(answer_with_surrogates())
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    r = await server.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello \ufffd world"
    chat = (await server.client.get(f"/api/chats/{r.headers['x-streamkeep-chat-id']}")).json()
    assert chat["messages"][-1]["parts"][-1] == {"type": "text", "text": "Hello \ufffd world"}
