"""A finished reply stays replayable for `replay_window` seconds, then resumes are 204."""

from __future__ import annotations

import asyncio

from tests.server.conftest import ServerFactory
from tests.server.sse import read_all

WINDOW = 1.0


async def test_a_finished_reply_replays_inside_the_window_and_not_after(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(replay_window=WINDOW)
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "hi"}) as r:
        whole = await read_all(r)
    assert whole[-1].type == "[DONE]"
    first = whole[0].seq
    assert first is not None

    resume = f"/api/chats/{chat['id']}/stream"
    async with server.client.stream("GET", resume, headers={"last-event-id": str(first)}) as r:
        assert r.status_code == 200
        assert await read_all(r) == whole[1:]

    await asyncio.sleep(WINDOW + 0.5)
    late = await server.client.get(resume, headers={"last-event-id": str(first)})
    assert late.status_code == 204
