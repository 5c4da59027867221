"""Streams over HTTP: headers, live relay, disconnect, stop, provider failure, 409, 413."""

from __future__ import annotations

from typing import Any

from streamkeep.generation import Generation
from tests.fakes.upstream import Script
from tests.server.conftest import Server, ServerFactory
from tests.server.sse import events, read_all, text_of, until

PACED = Script(tokens=40, delay=0.05)  # about two seconds: long enough to act mid-stream


def live(server: Server, chat_id: str) -> Generation:
    generation: Generation | None = server.app.state.manager.live(chat_id)
    assert generation is not None
    return generation


async def stored(server: Server, message_id: str) -> dict[str, Any]:
    r = await server.client.get(f"/api/messages/{message_id}")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def stored_text(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


async def test_reply_streams_and_is_stored(server: Server) -> None:
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "hi there"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["x-streamkeep-chat-id"] == chat["id"]
        evts = await read_all(r)
    message_id = r.headers["x-streamkeep-message-id"]
    assert evts[0].type == "start"
    assert evts[0].data["messageId"] == message_id
    assert [e.seq for e in evts] == list(range(1, len(evts) + 1))
    assert evts[-2].type == "finish" and evts[-1].type == "[DONE]"
    assert text_of(evts) == "Hello! You said: hi there"

    message = await stored(server, message_id)
    assert message["status"] == "complete"
    assert stored_text(message) == "Hello! You said: hi there"
    branch = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant"]
    assert branch[1]["id"] == message_id


async def test_tokens_are_relayed_while_the_upstream_streams(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(PACED)
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        stream = events(r)
        first = await until(stream, "text-delta")
        # The first delta reached us while the model was still answering.
        assert server.upstream.open_streams > 0
        rest = [e async for e in stream]
    assert len([e for e in first + rest if e.type == "text-delta"]) == PACED.tokens
    assert rest[-1].type == "[DONE]"


async def test_disconnect_does_not_stop_the_generation(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(PACED)
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        await until(events(r), "text-delta")
        message_id = r.headers["x-streamkeep-message-id"]
    # The client has gone; the generation carries on to the end and is stored whole.
    generation = live(server, chat["id"])
    await generation.wait()
    message = await stored(server, message_id)
    assert message["status"] == "complete"
    deltas = len(stored_text(message).split())
    assert deltas == PACED.tokens
    assert server.upstream.closed_by_client == 0


async def test_stop_mid_stream_keeps_the_partial_answer(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(Script(tokens=1000, delay=0.02))
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        stream = events(r)
        seen = await until(stream, "text-delta")
        stop = await server.client.post(f"/api/chats/{chat['id']}/stop")
        assert stop.status_code == 200
        assert stop.json() == {"stopped": True}
        seen += [e async for e in stream]
    assert seen[-1].type == "[DONE]"
    assert "abort" in [e.type for e in seen]
    message = await stored(server, r.headers["x-streamkeep-message-id"])
    assert message["status"] == "stopped"
    assert stored_text(message) == text_of(seen)
    assert 0 < len(stored_text(message).split()) < 1000
    await server.upstream.wait_idle()
    assert server.upstream.closed_by_client == 1
    # Nothing left to stop.
    again = await server.client.post(f"/api/chats/{chat['id']}/stop")
    assert again.json() == {"stopped": False}


async def test_provider_failure_is_an_error_chunk_and_stored(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(Script(tokens=10, error_after=3))
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        evts = await read_all(r)
    errors = [e for e in evts if e.type == "error"]
    assert len(errors) == 1 and errors[0].data["errorText"]
    assert evts[-1].type == "[DONE]"
    message = await stored(server, r.headers["x-streamkeep-message-id"])
    assert message["status"] == "error"
    assert message["error"]
    assert stored_text(message) == text_of(evts)
    assert len(stored_text(message).split()) == 3


async def test_second_generation_on_a_busy_chat_is_409(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(PACED)
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "first"}) as r:
        stream = events(r)
        await until(stream, "start")
        before = (await server.client.get(f"/api/chats/{chat['id']}")).json()
        second = await server.client.post(path, json={"content": "second"})
        assert second.status_code == 409
        assert second.json()["error"]["type"] == "generation_conflict"
        assert second.json()["error"]["message_id"] == r.headers["x-streamkeep-message-id"]
        after = (await server.client.get(f"/api/chats/{chat['id']}")).json()
        assert [m["id"] for m in after["messages"]] == [m["id"] for m in before["messages"]]
        assert after["active_generation"]["message_id"] == r.headers["x-streamkeep-message-id"]
        assert [e async for e in stream][-1].type == "[DONE]"
    assert len(server.upstream.requests) == 1


async def test_idempotency_key_joins_the_same_generation(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(PACED)
    path = f"/api/chats/{chat['id']}/messages"
    headers = {"idempotency-key": "k-1"}
    async with server.client.stream("POST", path, json={"content": "x"}, headers=headers) as r1:
        first = await until(events(r1), "text-delta")
        async with server.client.stream("POST", path, json={"content": "x"}, headers=headers) as r2:
            assert r2.status_code == 200
            retry = await read_all(r2)
    assert r2.headers["x-streamkeep-message-id"] == r1.headers["x-streamkeep-message-id"]
    assert retry[: len(first)] == first  # from the start: the same events
    assert retry[-1].type == "[DONE]"
    assert len(server.upstream.requests) == 1
    branch = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant"]


async def test_bad_messages_are_refused_and_change_nothing(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(max_message_chars=20)
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": "x" * 21}, 413, "message_too_long"),
        ({"content": ""}, 422, "invalid_request"),
        ({"content": "   "}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"content": "ok", "model": "fake/unknown"}, 404, "unknown_model"),
        ({"content": "ok", "parent_id": "msg_nope"}, 404, "not_found"),
    ]
    for body, status, kind in cases:
        r = await server.client.post(path, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["type"] == kind
    r = await server.client.post("/api/chats/chat_nope/messages", json={"content": "ok"})
    assert r.status_code == 404
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
    assert server.upstream.requests == []
    # A bad Last-Event-ID is refused before anything starts.
    r = await server.client.post(path, json={"content": "ok"}, headers={"last-event-id": "x"})
    assert r.status_code == 422
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []


async def test_stop_on_disconnect_stops_when_the_last_client_leaves(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(stop_on_disconnect=True)
    chat = await server.new_chat()
    server.upstream.enqueue(Script(tokens=1000, delay=0.02))
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        await until(events(r), "text-delta")
        message_id = r.headers["x-streamkeep-message-id"]
    await live(server, chat["id"]).wait()
    message = await stored(server, message_id)
    assert message["status"] == "stopped"
    assert 0 < len(stored_text(message).split()) < 1000
    await server.upstream.wait_idle()
    assert server.upstream.closed_by_client == 1
