"""Disabling a user on one worker stops their reply running on another (through
Redis), and their key stops working on both at once.

Two real uvicorn servers on one PostgreSQL database and real Redis (the `cluster` of
test_accounts_workers), the fake upstream.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from tests.fakes.upstream import FakeUpstream
from tests.scaleout.test_accounts_workers import cluster
from tests.server.isolation import SLOW
from tests.server.sse import events, until

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def test_disabling_on_one_worker_stops_a_reply_on_the_other(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    pg_url: str,
    keys: Keys,
    redis: aioredis.Redis,
) -> None:
    async with (
        cluster(tmp_path, fake_upstream, pg_url, keys) as (store, (url_a, url_b)),
        AsyncExitStack() as stack,
    ):

        async def client(url: str, key: str) -> httpx.AsyncClient:
            made = httpx.AsyncClient(
                base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"}
            )
            stack.push_async_callback(made.aclose)
            return made

        root = await store.create_user("root", None, is_admin=True)
        alice = await store.create_user("alice", None)
        root_b = await client(url_b, (await store.create_api_key(root.id))[1])
        alice_key = (await store.create_api_key(alice.id))[1]
        alice_a, alice_b = await client(url_a, alice_key), await client(url_b, alice_key)

        chat_id = (await alice_a.post("/api/chats", json={})).json()["id"]
        path = f"/api/chats/{chat_id}/messages"
        async with alice_a.stream("POST", path, json={"content": SLOW}) as live:
            stream = events(live)
            seen = await until(stream, "text-delta")  # running on worker a
            r = await root_b.post("/api/admin/users/alice/disable")
            assert r.status_code == 200, r.text
            assert r.json()["stopped"] == [chat_id]
            for worker in (alice_a, alice_b):
                assert (await worker.get("/api/me")).status_code == 401
            seen += [e async for e in stream]
        assert seen[-1].type == "[DONE]" and "abort" in [e.type for e in seen]
        reply = (await store.active_branch(chat_id))[-1]
        assert (reply.role, reply.status) == ("assistant", "stopped")
