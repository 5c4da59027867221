"""Resuming a chat's stream: exact continuation after Last-Event-ID, 204 when idle."""

from __future__ import annotations

from tests.fakes.upstream import Script
from tests.server.conftest import Server
from tests.server.sse import Event, events, read_all, until


async def _first_part(server: Server, chat_id: str, upto: int) -> list[Event]:
    """Start a paced reply, read events up to seq `upto`, then drop the connection."""
    server.upstream.enqueue(Script(tokens=30, delay=0.03))
    seen: list[Event] = []
    path = f"/api/chats/{chat_id}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        async for event in events(r):
            seen.append(event)
            if event.seq == upto:
                break
    return seen


async def test_resume_with_last_event_id_loses_and_repeats_nothing(server: Server) -> None:
    chat = await server.new_chat()
    first = await _first_part(server, chat["id"], upto=6)
    assert [e.seq for e in first] == [1, 2, 3, 4, 5, 6]

    resume = f"/api/chats/{chat['id']}/stream"
    async with server.client.stream("GET", resume, headers={"last-event-id": "6"}) as r:
        assert r.status_code == 200
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        rest = await read_all(r)
    assert rest[0].seq == 7
    assert rest[-1].type == "[DONE]"

    # The whole stream, replayed from the start, is exactly the two parts joined.
    async with server.client.stream("GET", resume, params={"after": "0"}) as r:
        whole = await read_all(r)
    assert first + rest == whole
    assert [e.seq for e in whole] == list(range(1, len(whole) + 1))

    # After the end: nothing to resume.
    last = str(whole[-1].seq)
    assert (await server.client.get(resume, headers={"last-event-id": last})).status_code == 204
    assert (await server.client.get(resume)).status_code == 204


async def test_resume_with_after_query_and_the_usechat_path(server: Server) -> None:
    chat = await server.new_chat()
    first = await _first_part(server, chat["id"], upto=3)
    async with server.client.stream(
        "GET", f"/api/chat/{chat['id']}/stream", params={"after": "3"}
    ) as r:
        rest = await read_all(r)
    assert rest[0].seq == 4
    assert first[0].type == "start"
    message = await server.client.get(f"/api/messages/{first[0].data['messageId']}")
    assert message.json()["status"] == "complete"


async def test_chat_detail_names_the_active_generation(server: Server) -> None:
    chat = await server.new_chat()
    server.upstream.enqueue(Script(tokens=30, delay=0.03))
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        stream = events(r)
        seen = await until(stream, "text-delta")
        active = (await server.client.get(f"/api/chats/{chat['id']}")).json()["active_generation"]
        assert active["message_id"] == r.headers["x-streamkeep-message-id"]
        assert active["last_seq"] >= seen[-1].seq
        [e async for e in stream]
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["active_generation"] is None


async def test_no_generation_is_204_and_bad_ids_are_422(server: Server) -> None:
    chat = await server.new_chat()
    r = await server.client.get(f"/api/chats/{chat['id']}/stream")
    assert r.status_code == 204
    for bad in ("abc", "-1"):
        r = await server.client.get(
            f"/api/chats/{chat['id']}/stream", headers={"last-event-id": bad}
        )
        assert r.status_code == 422
        assert r.json()["error"]["type"] == "invalid_request"


async def test_an_id_from_an_earlier_reply_resumes_the_running_one_from_its_start(
    server: Server,
) -> None:
    # A client kept Last-Event-ID 40 of the chat's first reply (it dropped there); it
    # resumes while the second reply runs, already past 40 frames of its own.
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    server.upstream.enqueue(Script(tokens=60))
    async with server.client.stream("POST", path, json={"content": "one"}) as r:
        first = await read_all(r)
    old_id = first[40].seq
    assert old_id == 41 and first[-1].type == "[DONE]"

    server.upstream.enqueue(Script(tokens=120, delay=0.01))
    async with server.client.stream("POST", path, json={"content": "two"}) as r:
        stream = events(r)
        second = [e for _ in range(45) for e in await until(stream, "text-delta")]
        assert len(second) > old_id
        resume = f"/api/chats/{chat['id']}/stream"
        async with server.client.stream(
            "GET", resume, headers={"last-event-id": str(old_id)}
        ) as resumed_r:
            assert resumed_r.status_code == 200
            resumed = await read_all(resumed_r)
        second += [e async for e in stream]

    assert resumed == second  # the whole second reply: nothing lost, nothing twice
    assert resumed[0].type == "start"
    assert resumed[0].data["messageId"] == r.headers["x-streamkeep-message-id"]
    assert resumed[0].seq is not None and first[-1].seq is not None
    assert resumed[0].seq > first[-1].seq  # ids never repeat across a chat's replies
    assert [e.seq for e in resumed] == list(range(resumed[0].seq, resumed[0].seq + len(resumed)))

    # It ended: its own last id has nothing after it (204); an id before it, from
    # the first reply, still gets the ended reply whole while it is kept.
    assert resumed[-1].seq is not None
    last = {"last-event-id": str(resumed[-1].seq)}
    assert (await server.client.get(resume, headers=last)).status_code == 204
    async with server.client.stream("GET", resume, headers={"last-event-id": "41"}) as r:
        assert await read_all(r) == second


async def test_a_deleted_chat_has_no_stream_to_resume(server: Server) -> None:
    # Its finished reply stays replayable for the replay window; the chat is gone.
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}"
    async with server.client.stream("POST", f"{path}/messages", json={"content": "hi"}) as r:
        assert (await read_all(r))[-1].type == "[DONE]"
    assert (await server.client.delete(path)).status_code == 204
    for headers in ({}, {"last-event-id": "0"}):
        r = await server.client.get(f"{path}/stream", headers=headers)
        assert r.status_code == 404, (headers, r.text)
        assert r.json()["error"]["type"] == "not_found"
