"""With Redis, a finished reply's stream expires after `replay_window` too: another
worker replays it inside the window and answers 204 after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from tests.conftest import TEST_REDIS_URL
from tests.fakes.upstream import FakeUpstream
from tests.server.conftest import make_settings, start_server, stop_server
from tests.server.sse import read_all

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WINDOW = 1.0


async def test_another_worker_replays_a_finished_reply_only_inside_the_window(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        settings = make_settings(
            tmp_path / name,
            fake_upstream.base_url,
            database_url=pg_url,
            redis_url=TEST_REDIS_URL,
            redis_prefix=keys.prefix,
            replay_window=WINDOW,
        )
        servers.append(await start_server(settings))
    try:
        async with (
            httpx.AsyncClient(base_url=servers[0].url, timeout=30) as a,
            httpx.AsyncClient(base_url=servers[1].url, timeout=30) as b,
        ):
            chat_id = (await a.post("/api/chats", json={})).json()["id"]
            path = f"/api/chats/{chat_id}/messages"
            async with a.stream("POST", path, json={"content": "hi"}) as r:
                whole = await read_all(r)
            assert whole[-1].type == "[DONE]"
            first = str(whole[0].seq)

            resume = f"/api/chats/{chat_id}/stream"
            async with b.stream("GET", resume, headers={"last-event-id": first}) as r:
                assert r.status_code == 200
                assert await read_all(r) == whole[1:]

            await asyncio.sleep(WINDOW + 0.5)
            for client in (a, b):
                late = await client.get(resume, headers={"last-event-id": first})
                assert late.status_code == 204
    finally:
        for running in reversed(servers):
            await stop_server(running)
