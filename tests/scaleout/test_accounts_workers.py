"""Isolation across two workers: a resume or stop that lands on the worker that does not
run the generation checks the owner too, and auth turns on for both when the first
user is made through one.

Two real uvicorn servers on different loopback ports, one PostgreSQL database, real
Redis under the test's own key prefix, the fake upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from streamkeep.config import LimitsConfig, LimitSpec
from streamkeep.scaleout import Keys
from streamkeep.store import ChatStore
from tests.conftest import TEST_REDIS_URL
from tests.fakes.upstream import FakeUpstream
from tests.server.conftest import make_settings, start_server, stop_server
from tests.server.isolation import SLOW, make_owned, probe
from tests.server.sse import read_all

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@asynccontextmanager
async def cluster(
    tmp_path: Path, upstream: FakeUpstream, pg_url: str, keys: Keys, **overrides: Any
) -> AsyncIterator[tuple[ChatStore, list[str]]]:
    """Two workers; yields the store (of the first) and their URLs."""
    runnings = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            settings = make_settings(
                tmp_path / name,
                upstream.base_url,
                database_url=pg_url,
                redis_url=TEST_REDIS_URL,
                redis_prefix=keys.prefix,
                checkpoint_interval=0.2,
                **overrides,
            )
            runnings.append(await start_server(settings))
        store: ChatStore = runnings[0].server.config.app.state.store
        yield store, [r.url for r in runnings]
    finally:
        for running in reversed(runnings):
            await stop_server(running)


async def test_two_users_on_two_workers_see_nothing_of_each_other(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    pg_url: str,
    keys: Keys,
    redis: aioredis.Redis,
) -> None:
    async with cluster(tmp_path, fake_upstream, pg_url, keys) as (store, (url_a, url_b)):
        anonymous = httpx.AsyncClient(base_url=url_b, timeout=30)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(anonymous.aclose)
            assert (await anonymous.get("/api/chats")).status_code == 200  # auth off

            clients = {}
            for name in ("alice", "bob"):
                user = await store.create_user(name, "pw")  # through worker a's store
                _, key = await store.create_api_key(user.id)
                for worker, url in (("a", url_a), ("b", url_b)):
                    client = httpx.AsyncClient(
                        base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"}
                    )
                    stack.push_async_callback(client.aclose)
                    clients[name, worker] = client
            # Worker b learns of the first user at its next request.
            assert (await anonymous.get("/api/chats")).status_code == 401

            alice_a, alice_b, bob_b = (
                clients["alice", "a"],
                clients["alice", "b"],
                clients["bob", "b"],
            )
            owned = await make_owned(alice_a)
            await probe(bob_b, alice_b, owned)  # bob on the other worker
            await probe(clients["bob", "a"], alice_a, owned)  # and on the same one

            # A live generation on a: bob on b can neither read nor stop it; alice on b can.
            chat_id = (await alice_a.post("/api/chats", json={})).json()["id"]
            async with alice_a.stream(
                "POST", f"/api/chats/{chat_id}/messages", json={"content": SLOW}
            ) as live:
                assert live.status_code == 200
                r = await bob_b.get(f"/api/chats/{chat_id}/stream", headers={"last-event-id": "1"})
                assert r.status_code == 404
                assert (await bob_b.post(f"/api/chats/{chat_id}/stop")).status_code == 404
                async with alice_b.stream(
                    "GET", f"/api/chats/{chat_id}/stream", headers={"last-event-id": "1"}
                ) as resumed:
                    assert resumed.status_code == 200
                    assert (await alice_b.post(f"/api/chats/{chat_id}/stop")).json() == {
                        "stopped": True
                    }
                    rest = await read_all(resumed)
                await read_all(live)
            assert rest[-1].type == "[DONE]"
            messages = (await alice_a.get(f"/api/chats/{chat_id}")).json()["messages"]
            assert messages[-1]["status"] == "stopped"


async def test_limits_count_across_workers_in_redis(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    pg_url: str,
    keys: Keys,
    redis: aioredis.Redis,
) -> None:
    limits = LimitsConfig(
        user=LimitSpec(concurrent_generations=1),
        users={"alice": LimitSpec(requests_per_minute=3)},
    )
    async with cluster(tmp_path, fake_upstream, pg_url, keys, limits=limits) as (store, urls):
        clients = {}
        async with AsyncExitStack() as stack:
            for name in ("alice", "bob"):
                user = await store.create_user(name, "pw")
                _, key = await store.create_api_key(user.id)
                for worker, url in zip("ab", urls, strict=True):
                    client = httpx.AsyncClient(
                        base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"}
                    )
                    clients[name, worker] = await stack.enter_async_context(client)

            # alice: 3 requests a minute, wherever they land.
            for worker in "aab":
                assert (await clients["alice", worker].get("/api/chats")).status_code == 200
            r = await clients["alice", "b"].get("/api/chats")
            assert r.status_code == 429, r.text
            assert "3 requests per minute for user alice" in r.json()["error"]["message"]
            assert 1 <= int(r.headers["retry-after"]) <= 60

            # bob: one generation at a time, whichever worker runs it.
            bob_a, bob_b = clients["bob", "a"], clients["bob", "b"]
            first = (await bob_a.post("/api/chats", json={})).json()["id"]
            second = (await bob_b.post("/api/chats", json={})).json()["id"]
            async with bob_a.stream(
                "POST", f"/api/chats/{first}/messages", json={"content": SLOW}
            ) as live:
                assert live.status_code == 200
                r = await bob_b.post(f"/api/chats/{second}/messages", json={"content": "hi"})
                assert r.status_code == 429, r.text
                assert "1 concurrent generation for user bob" in r.json()["error"]["message"]
                await read_all(live)
            assert [k async for k in redis.scan_iter(f"{keys.prefix}limits:*")]
            async with asyncio.timeout(10):  # a's settling gives the slot back
                while True:
                    async with bob_b.stream(
                        "POST", f"/api/chats/{second}/messages", json={"content": "hi"}
                    ) as r:
                        if r.status_code == 200:
                            await read_all(r)
                            break
                    await asyncio.sleep(0.05)
