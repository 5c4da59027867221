"""A deleted chat's finished reply is not replayed by another worker, though its stream
is still in Redis for the replay window (found by the stateful fuzzing in one process,
`tests/server/test_fuzz.py`; here across two)."""

from __future__ import annotations

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


async def test_another_worker_does_not_replay_a_deleted_chat(
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
            replay_window=60.0,
        )
        servers.append(await start_server(settings))
    try:
        async with (
            httpx.AsyncClient(base_url=servers[0].url, timeout=30) as a,
            httpx.AsyncClient(base_url=servers[1].url, timeout=30) as b,
        ):
            chat_id = (await a.post("/api/chats", json={})).json()["id"]
            path = f"/api/chats/{chat_id}"
            async with a.stream("POST", f"{path}/messages", json={"content": "hi"}) as r:
                whole = await read_all(r)
            assert whole[-1].type == "[DONE]"
            first = str(whole[0].seq)
            async with b.stream("GET", f"{path}/stream", headers={"last-event-id": first}) as r:
                assert r.status_code == 200  # replayable on b: the stream is in Redis
                await read_all(r)

            assert (await a.delete(path)).status_code == 204
            for client in (a, b):
                r = await client.get(f"{path}/stream", headers={"last-event-id": first})
                assert r.status_code == 404, r.text
                assert r.json()["error"]["type"] == "not_found"
    finally:
        for running in reversed(servers):
            await stop_server(running)
