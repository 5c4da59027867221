"""Worker liveness on real Redis and PostgreSQL: whose generations may be interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import datetime, timedelta

import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys, Reaper, WorkerRegistry
from streamkeep.store import ChatStore, Database
from streamkeep.store.repository import utcnow
from tests.conftest import free_port
from tests.scaleout.waits import eventually

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def running_reply(store: ChatStore, worker_id: str) -> tuple[str, str]:
    """A chat with a streaming reply driven by `worker_id`: (generation id, message id)."""
    chat = await store.create_chat(model="fake/fake-model")
    _, reply, generation = await store.start_reply(
        chat_id=chat.id,
        parent_id=None,
        user_content="hi",
        model="fake/fake-model",
        worker_id=worker_id,
    )
    return generation.id, reply.id


async def status(store: ChatStore, message_id: str) -> str:
    return (await store.get_message(message_id)).status


@pytest.fixture
async def registries() -> AsyncIterator[list[WorkerRegistry]]:
    started: list[WorkerRegistry] = []
    yield started
    for registry in started:
        await registry.aclose()


async def join(
    registries: list[WorkerRegistry],
    redis: aioredis.Redis,
    keys: Keys,
    worker_id: str,
    ttl: float = 10.0,
) -> WorkerRegistry:
    registry = WorkerRegistry(redis, worker_id, keys=keys, ttl=ttl)
    await registry.start()
    registries.append(registry)
    return registry


def no_local() -> Collection[str]:
    return ()


def a_minute_later() -> datetime:
    """A reaper's clock for which every heartbeat so far is stale."""
    return utcnow() + timedelta(minutes=1)


async def test_alive_lists_registered_workers_until_they_leave(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys
) -> None:
    a = await join(registries, redis, keys, "worker-a")
    await join(registries, redis, keys, "worker-b")
    assert await a.alive() == {"worker-a", "worker-b"}
    await registries.pop().aclose()
    assert await a.alive() == {"worker-a"}


async def test_at_start_only_dead_workers_generations_are_interrupted(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys, store: ChatStore
) -> None:
    await join(registries, redis, keys, "worker-live")
    _, live_message = await running_reply(store, "worker-live")
    _, dead_message = await running_reply(store, "worker-dead")  # no key: not alive

    newcomer = await join(registries, redis, keys, "worker-new")
    reaper = Reaper(store, newcomer, local_generation_ids=no_local, clock=a_minute_later)
    assert await reaper.recover_at_start() == [dead_message]

    assert await status(store, dead_message) == "interrupted"
    assert await status(store, live_message) == "streaming"


async def test_at_start_a_missing_key_alone_does_not_interrupt_a_fresh_generation(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys, store: ChatStore
) -> None:
    # Redis restarted without persistence: the worker's key is gone, but it still streams
    # and heartbeats; only the reaper's "stale too" rule may end its work.
    _, message_id = await running_reply(store, "worker-keyless")
    newcomer = await join(registries, redis, keys, "worker-new")
    reaper = Reaper(store, newcomer, local_generation_ids=no_local)
    assert await reaper.recover_at_start() == []
    assert await status(store, message_id) == "streaming"


async def test_without_redis_the_heartbeat_alone_decides(store: ChatStore, pg_url: str) -> None:
    # Redis is away (nothing listens there): who is alive is unknown. A worker that died
    # meanwhile must not leave its replies streaming until Redis is back; a live one
    # heartbeats its generations in the database whatever Redis does.
    unreachable = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    database = Database.from_url(pg_url)  # the live worker's, on its own clock
    try:
        me = WorkerRegistry(unreachable, "worker-me")
        _, dead_message = await running_reply(store, "worker-dead")
        fresh_id, fresh_message = await running_reply(store, "worker-alive")
        reaper = Reaper(store, me, local_generation_ids=no_local, stale_after=60.0)
        assert await reaper.reap() == []  # nothing stale yet
        # A minute later: the live worker has heartbeaten since, the dead one has not.
        later = ChatStore(database, clock=a_minute_later)
        await later.heartbeat([fresh_id], "worker-alive")
        reaper = Reaper(store, me, local_generation_ids=no_local, clock=a_minute_later)
        assert await reaper.reap() == [dead_message]
        assert await reaper.recover_at_start() == []
        assert await status(store, dead_message) == "interrupted"
        assert await status(store, fresh_message) == "streaming"
    finally:
        await unreachable.aclose()
        await database.dispose()


async def test_a_generation_this_worker_runs_is_never_interrupted_at_start(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys, store: ChatStore
) -> None:
    generation_id, message_id = await running_reply(store, "worker-old-name")
    me = await join(registries, redis, keys, "worker-me")
    reaper = Reaper(store, me, local_generation_ids=lambda: [generation_id])
    assert await reaper.recover_at_start() == []
    assert await status(store, message_id) == "streaming"


async def test_a_worker_that_stops_heartbeating_is_reaped_by_another(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys, store: ChatStore
) -> None:
    doomed = await join(registries, redis, keys, "worker-doomed", ttl=0.5)
    generation_id, message_id = await running_reply(store, "worker-doomed")
    await store.checkpoint([(message_id, [{"type": "text", "text": "partial"}])])

    survivor = await join(registries, redis, keys, "worker-survivor")
    reaper = Reaper(
        store, survivor, local_generation_ids=no_local, interval=0.1, clock=a_minute_later
    )
    # Stale in the database but alive in Redis: left alone.
    assert await reaper.reap() == []
    assert await status(store, message_id) == "streaming"

    await doomed.aclose(leave=False)  # it dies: its key expires at its TTL
    reaper.start()
    try:
        await eventually(lambda: status_is(store, message_id, "interrupted"), within=10)
    finally:
        await reaper.aclose()
    message = await store.get_message(message_id)
    assert message.parts == [{"type": "text", "text": "partial"}]  # the last checkpoint
    assert (await store.get_generation(generation_id)).status == "finished"


async def status_is(store: ChatStore, message_id: str, expected: str) -> bool:
    return await status(store, message_id) == expected


async def test_a_dead_worker_is_reaped_only_once_its_heartbeat_is_stale(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys, store: ChatStore
) -> None:
    generation_id, message_id = await running_reply(store, "worker-gone")
    survivor = await join(registries, redis, keys, "worker-survivor")
    reaper = Reaper(store, survivor, local_generation_ids=no_local, clock=a_minute_later)
    assert await reaper.reap() == [message_id]  # stale and dead: reaped

    generation_id, message_id = await running_reply(store, "worker-gone")
    reaper = Reaper(store, survivor, local_generation_ids=no_local, stale_after=60.0)
    await store.heartbeat([generation_id], "worker-gone")
    assert await reaper.reap() == []
    assert await status(store, message_id) == "streaming"


async def test_alive_does_not_walk_the_key_space(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys
) -> None:
    """Observed with MONITOR: listing who is alive reads the set of workers and their
    keys, never SCAN or KEYS, however many other keys the database holds."""
    a = await join(registries, redis, keys, "worker-a")
    await join(registries, redis, keys, "worker-b")
    await redis.mset({f"{keys.prefix}gen:other-{n}": b"x" for n in range(2000)})
    seen: list[str] = []
    sentinel = f"{keys.prefix}sentinel"
    async with redis.monitor() as monitor:
        await redis.get(f"{keys.prefix}warmup")

        async def watch() -> None:
            async for info in monitor.listen():
                seen.append(str(info.get("command", "")))
                if sentinel in seen[-1]:
                    return

        watcher = asyncio.create_task(watch())
        assert await a.alive() == {"worker-a", "worker-b"}
        await redis.get(sentinel)
        await asyncio.wait_for(watcher, 10)
    ours = [c for c in seen if keys.prefix in c]
    assert not [c for c in ours if c.split(" ", 1)[0].upper() in ("SCAN", "KEYS")], ours
    assert len(ours) <= 10, ours  # a few per worker: none per other key


async def test_a_dead_worker_is_not_alive_and_is_forgotten(
    registries: list[WorkerRegistry], redis: aioredis.Redis, keys: Keys
) -> None:
    a = await join(registries, redis, keys, "worker-a")
    doomed = await join(registries, redis, keys, "worker-doomed", ttl=0.3)
    assert await a.alive() == {"worker-a", "worker-doomed"}
    await doomed.aclose(leave=False)  # killed: its key expires at its TTL

    async def gone() -> bool:
        return await a.alive() == {"worker-a"}

    await eventually(gone)
    assert await redis.smembers(keys.workers) == {b"worker-a"}
    await doomed.register()  # a worker that comes back is alive again
    assert await a.alive() == {"worker-a", "worker-doomed"}
