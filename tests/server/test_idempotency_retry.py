"""A same-key retry arriving after its generation ended and was forgotten in memory.

As docs/api.md says, it is answered 409 `generation_conflict` naming the finished reply
(`message_id`, `generation_id`), for the client to fetch with GET /api/messages/{id};
it neither starts a second generation nor gets another generation's ids.
"""

from __future__ import annotations

import asyncio

from tests.fakes.upstream import Script
from tests.server.conftest import Server, ServerFactory
from tests.server.sse import read_all


async def finished_and_forgotten(server: Server, chat_id: str) -> None:
    await asyncio.sleep(0.01)  # lets the (zero-delay) retention timer fire
    assert server.app.state.manager.live(chat_id) is None


async def test_a_late_same_key_retry_gets_the_finished_reply_to_fetch(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(replay_window=0.0)
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    headers = {"idempotency-key": "late-1"}
    server.upstream.enqueue(Script(tokens=3))
    async with server.client.stream("POST", path, json={"content": "x"}, headers=headers) as r:
        assert r.status_code == 200
        assert (await read_all(r))[-1].type == "[DONE]"
        message_id = r.headers["x-streamkeep-message-id"]
    await finished_and_forgotten(server, chat["id"])

    retry = await server.client.post(path, json={"content": "x"}, headers=headers)

    assert retry.status_code == 409
    error = retry.json()["error"]
    assert error["type"] == "generation_conflict"
    assert error["message_id"] == message_id
    assert error["running"] is False
    assert "finished" in error["message"]
    fetched = await server.client.get(f"/api/messages/{message_id}")
    assert fetched.status_code == 200 and fetched.json()["status"] == "complete"
    branch = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant"]


async def test_a_late_same_key_retry_is_not_told_about_a_newer_generation(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(replay_window=0.0)
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    server.upstream.enqueue(Script(tokens=3))
    async with server.client.stream(
        "POST", path, json={"content": "one"}, headers={"idempotency-key": "a"}
    ) as r:
        await read_all(r)
        first_id = r.headers["x-streamkeep-message-id"]
    await finished_and_forgotten(server, chat["id"])
    server.upstream.enqueue(Script(tokens=10, hang_after=2))
    async with server.client.stream(
        "POST", path, json={"content": "two"}, headers={"idempotency-key": "b"}
    ) as running:
        retry = await server.client.post(
            path, json={"content": "one"}, headers={"idempotency-key": "a"}
        )
        assert retry.status_code == 409
        assert retry.json()["error"]["message_id"] == first_id
        assert retry.json()["error"]["message_id"] != running.headers["x-streamkeep-message-id"]
        stop = await server.client.post(f"/api/chats/{chat['id']}/stop")
        assert stop.json() == {"stopped": True}
