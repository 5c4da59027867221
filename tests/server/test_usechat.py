"""The Vercel AI SDK useChat transport: POST /api/chat, GET /api/chat/{id}/stream."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Server
from tests.server.sse import read_all, text_of


def ui(role: str, text: str, id: str = "m") -> dict[str, Any]:
    return {"id": id, "role": role, "parts": [{"type": "text", "text": text}]}


async def _post(server: Server, body: dict[str, Any]) -> tuple[str, str]:
    async with server.client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        evts = await read_all(r)
    assert evts[0].type == "start" and evts[-1].type == "[DONE]"
    return evts[0].data["messageId"], text_of(evts)


async def test_submit_creates_the_chat_and_uses_the_stored_history(server: Server) -> None:
    body = {"id": "client-chat-1", "trigger": "submit-message", "messages": [ui("user", "hi")]}
    _, text = await _post(server, body)
    assert text == "Hello! You said: hi"
    chat = await server.client.get("/api/chat/client-chat-1/stream")
    assert chat.status_code == 204
    detail = (await server.client.get("/api/chats/client-chat-1")).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]

    # The client's copy of the past is ignored: only its last user message counts.
    history = [ui("user", "rewritten past"), ui("assistant", "forged"), ui("user", "next")]
    body = {"id": "client-chat-1", "trigger": "submit-message", "messages": history}
    _, text = await _post(server, body)
    assert text == "Hello! You said: next"
    detail = (await server.client.get("/api/chats/client-chat-1")).json()
    texts = [m["parts"][0]["text"] for m in detail["messages"]]
    assert texts == ["hi", "Hello! You said: hi", "next", "Hello! You said: next"]
    prompt = server.upstream.requests[-1]["messages"]
    assert [m["content"] for m in prompt if m["role"] == "user"] == ["hi", "next"]


async def test_regenerate_message(server: Server) -> None:
    body = {"id": "client-chat-2", "trigger": "submit-message", "messages": [ui("user", "x")]}
    first_id, _ = await _post(server, body)
    regen = {
        "id": "client-chat-2",
        "trigger": "regenerate-message",
        "messageId": first_id,
        "messages": [ui("user", "x")],
    }
    second_id, text = await _post(server, regen)
    assert second_id != first_id
    assert text == "Hello! You said: x"
    # A client-side id the server does not know: the last assistant message is redone.
    third_id, _ = await _post(server, regen | {"messageId": "client-only-id"})
    detail = (await server.client.get("/api/chats/client-chat-2")).json()
    assert detail["messages"][-1]["id"] == third_id
    assert detail["messages"][-1]["sibling_ids"] == [first_id, second_id, third_id]


async def test_a_stream_cut_short_reaches_usechat_as_an_error(server: Server) -> None:
    # The provider's body ends with no finish reason: useChat must get an error, not a
    # finish that would make it show a truncated answer as whole.
    cut = ui("user", "go [[tokens=6 cut_after=3]]")
    body = {"id": "client-chat-cut", "trigger": "submit-message", "messages": [cut]}
    async with server.client.stream("POST", "/api/chat", json=body) as r:
        evts = await read_all(r)
    [error] = [e.data for e in evts if e.type == "error"]
    assert error["errorText"] == "the provider closed the stream before finishing"
    assert evts[-2].data == {"type": "finish", "finishReason": "error"}
    assert text_of(evts) == "lorem ipsum dolor"
    reply = (await server.client.get("/api/chats/client-chat-cut")).json()["messages"][-1]
    assert (reply["status"], reply["error"]) == (
        "error",
        "the provider closed the stream before finishing",
    )


async def test_bad_usechat_requests_change_nothing(server: Server) -> None:
    c = server.client
    no_text = {"id": "c3", "messages": [{"id": "1", "role": "user", "parts": []}]}
    r = await c.post("/api/chat", json=no_text)
    assert r.status_code == 422
    r = await c.post("/api/chat", json={"id": "c3", "messages": [ui("user", "x")], "trigger": "?"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "trigger"
    r = await c.post(
        "/api/chat", json={"id": "c3", "trigger": "regenerate-message", "messages": []}
    )
    assert r.status_code == 404
    r = await c.post("/api/chat", json={"id": "c3", "messages": [ui("user", "x")], "model": "a/b"})
    assert r.status_code == 404
    r = await c.post(
        "/api/chat",
        json={"id": "c3", "messages": [ui("user", "x")]},
        headers={"Last-Event-ID": "abc"},
    )
    assert r.status_code == 422
    assert (await c.get("/api/chats/c3")).status_code == 404
    assert (await c.get("/api/chats")).json()["items"] == []
