"""Two workers in one test: two GenerationManagers, each with its own Redis connection
pool and its own `Cluster`, sharing one PostgreSQL database and one Redis server, and a
fake OpenAI-style upstream over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streamkeep.generation import GenerationManager
from streamkeep.llm.registry import ModelRegistry
from streamkeep.scaleout import (
    Cluster,
    Keys,
    RedisEventLog,
    RedisWriter,
    RemoteGeneration,
    connect,
)
from streamkeep.sse import numbered_frames
from streamkeep.store import ChatStore, Database
from tests.conftest import TEST_REDIS_URL, free_port
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, make_settings
from tests.generation.streams import Frame, deltas, parse, read_all, read_until, types
from tests.scaleout.waits import eventually
from tests.services import RedisServer, outage

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

WorkerFactory = Callable[[str], contextlib.AbstractAsyncContextManager[GenerationManager]]


@pytest.fixture
def worker(
    store: ChatStore, fake_upstream: FakeUpstream, data_dir: Path, keys: Keys, redis: aioredis.Redis
) -> WorkerFactory:
    """`async with worker("a") as manager:` a started manager in a cluster of its own
    Redis pool (the `redis` fixture only cleans the test's keys up), on the test Redis
    or the one at `url`."""

    @contextlib.asynccontextmanager
    async def factory(
        name: str, url: str = TEST_REDIS_URL, **cluster: Any
    ) -> AsyncIterator[GenerationManager]:
        settings = make_settings(fake_upstream, data_dir, checkpoint_interval=0.2)
        registry = ModelRegistry(settings)
        pool = connect(url)  # as the app makes it
        node = Cluster(pool, store, f"worker-{name}", keys=keys, **cluster)
        manager = GenerationManager(
            store, registry, settings, worker_id=f"worker-{name}", cluster=node
        )
        await manager.start()
        try:
            yield manager
        finally:
            await manager.shutdown()
            await registry.aclose()
            await pool.aclose()

    return factory


async def remote_frames(remote: RemoteGeneration, after: int = 0) -> list[Frame]:
    async with asyncio.timeout(20):
        return parse(b"".join([c async for c in remote.subscribe(after)]))


async def new_chat(store: ChatStore) -> str:
    return (await store.create_chat(model=MODEL)).id


async def test_a_generation_resumes_on_another_worker_exactly_once(
    worker: WorkerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with worker("a") as a, worker("b") as b:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=30, delay=0.02))
        gen = await a.reply(chat_id=chat_id, content="hi")
        seen = await read_until(gen.subscribe(), deltas(5))  # the client, on worker a
        last = seen[-1].seq

        assert b.live(chat_id) is None  # not b's own
        remote = await b.find_remote(chat_id)
        assert remote is not None and remote.message_id == gen.message_id
        rest = await remote_frames(remote, after=last)  # reconnected to worker b

        full = await read_all(gen)
        assert seen + rest == full
        assert types(full)[-2:] == ["finish", "[DONE]"]
        assert types(full).count("text-delta") == 30
        # After the end, within the stream's expiry, b still serves the tail.
        after_end = await b.find_remote(chat_id)
        assert after_end is not None and after_end.done.is_set()
        assert await remote_frames(after_end, after=len(full) - 3) == full[-3:]


async def test_a_stop_on_another_worker_reaches_the_owner(
    worker: WorkerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with worker("a") as a, worker("b") as b:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=10, hang_after=3))
        gen = await a.reply(chat_id=chat_id, content="hi")
        await read_until(gen.subscribe(), deltas(3))

        assert await b.stop(chat_id) is True
        assert gen.done.is_set()  # True means: stopped and stored, like a local stop
        message = await store.get_message(gen.message_id)
        assert message.status == "stopped"
        assert await b.stop(chat_id) is False  # nothing left to stop anywhere


async def test_a_new_worker_leaves_a_live_workers_generation_alone(
    worker: WorkerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with worker("a") as a:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=10, hang_after=3))
        gen = await a.reply(chat_id=chat_id, content="hi")
        await read_until(gen.subscribe(), deltas(3))
        async with worker("b"):
            assert (await store.get_message(gen.message_id)).status == "streaming"
            assert not gen.done.is_set()
        await a.stop(chat_id)


async def test_a_stop_of_a_generation_no_worker_runs_answers_at_once(
    worker: WorkerFactory, store: ChatStore
) -> None:
    """The database still says running (the owner ended it a moment ago, or died): the
    workers all say no, and the stop answers without waiting for its timeout."""
    async with worker("a", stop_timeout=60.0), worker("b", stop_timeout=60.0) as b:
        chat_id = await new_chat(store)
        await store.start_reply(
            chat_id=chat_id, parent_id=None, user_content="hi", model=MODEL, worker_id="worker-x"
        )
        async with asyncio.timeout(10):  # far below the stop timeout
            assert await b.stop(chat_id) is False


async def dead_workers_reply(store: ChatStore, keys: Keys, chat_id: str) -> tuple[str, str]:
    """A reply a worker was streaming (its rows, its stream and the chat's pointer in
    Redis) when it was SIGKILLed: it never closed the stream. (generation, message)"""
    pool = aioredis.from_url(TEST_REDIS_URL)
    dead = Cluster(pool, store, "worker-dead", keys=keys)  # never registered: not alive
    try:
        _, reply, record = await store.start_reply(
            chat_id=chat_id, parent_id=None, user_content="hi", model=MODEL, worker_id="worker-dead"
        )
        log = dead.new_log(record.id, chat_id, reply.id)
        log.append(numbered_frames([b'{"type":"start-step"}'], 1))
        await dead.writer.flush()
    finally:
        await pool.aclose()
    return record.id, reply.id


async def test_a_dead_workers_stream_expires_once_the_survivor_interrupts_it_at_start(
    worker: WorkerFactory, store: ChatStore, keys: Keys, redis: aioredis.Redis
) -> None:
    chat_id = await new_chat(store)
    generation_id, message_id = await dead_workers_reply(store, keys, chat_id)
    stream = keys.generation(generation_id)
    assert await redis.pttl(stream) == -1  # live: no expiry
    async with worker("b", stale_after=0.0, expire_after=30.0):
        assert (await store.get_message(message_id)).status == "interrupted"
        assert 0 < await redis.pttl(stream) <= 30_000  # as after a normal end


async def test_a_dead_workers_stream_expires_once_the_reaper_interrupts_it(
    worker: WorkerFactory, store: ChatStore, keys: Keys, redis: aioredis.Redis
) -> None:
    async with worker("b", stale_after=0.2, reap_interval=0.1, expire_after=30.0):
        chat_id = await new_chat(store)
        generation_id, message_id = await dead_workers_reply(store, keys, chat_id)
        stream = keys.generation(generation_id)

        async def expiring() -> bool:
            return await redis.pttl(stream) > 0

        await eventually(expiring, within=10)
        assert await redis.pttl(stream) <= 30_000
        assert (await store.get_message(message_id)).status == "interrupted"


async def test_an_earlier_replys_id_resumes_the_next_reply_whole_on_another_worker(
    worker: WorkerFactory,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    keys: Keys,
    redis: aioredis.Redis,
) -> None:
    async with worker("a") as a, worker("b") as b:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=60))
        first = await read_all(await a.reply(chat_id=chat_id, content="one"))
        old_id = first[40].seq  # a client dropped here, in the first reply

        fake_upstream.enqueue(Script(tokens=60, hang_after=45))
        gen = await a.reply(chat_id=chat_id, content="two")
        sent = await read_until(gen.subscribe(), deltas(45))
        assert len(sent) > old_id and sent[0].seq > first[-1].seq

        async def second_is_found() -> bool:
            found = await b.find_remote(chat_id)
            return found is not None and found.message_id == gen.message_id

        await eventually(second_is_found)
        remote = await b.find_remote(chat_id)
        assert remote is not None and remote.first_seq == sent[0].seq
        resumed = await read_until(remote.subscribe(old_id), lambda f: len(f) >= len(sent))
        assert resumed[: len(sent)] == sent  # from its start: nothing lost or repeated

        # Without the chat's pointer (found through the database), the same.
        await redis.delete(keys.chat(chat_id))
        blind = await b.find_remote(chat_id)
        assert blind is not None and blind.first_seq is None
        resumed = await read_until(blind.subscribe(old_id), lambda f: len(f) >= len(sent))
        assert resumed[: len(sent)] == sent
        await gen.stop()


async def test_the_client_survives_a_redis_restart_on_the_connections_it_kept(
    private_redis: RedisServer,
) -> None:
    client = connect(private_redis.url)
    try:
        # Connections the pool keeps: two at once, then idle in the pool.
        await asyncio.gather(client.set("k", b"1"), client.blpop(["nothing"], timeout=0.1))
        with private_redis.down():
            pass  # every pooled connection is dead now
        assert await client.get("k") is None  # Redis came back empty, and answers
        assert await client.set("k", b"2")
    finally:
        await client.aclose()


async def test_a_remote_reader_waits_on_while_the_database_cannot_say_it_ended(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    # The reader's worker asks the database whether a quiet stream's generation still
    # runs; the database is away (nothing listens there), Redis is not.
    away = Database.from_url(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    reader = Cluster(other_redis, ChatStore(away), "worker-b", keys=keys)
    writer = RedisWriter(redis)  # the owner's: not started, the test flushes
    log = RedisEventLog(writer, keys.generation("g1"))
    pointer = {"generation": "g1", "message": "m1", "resumable": True, "first_seq": 1}
    writer.point(keys.chat("c1"), orjson.dumps(pointer), stream=log.key)
    log.append(numbered_frames([b'{"type":"start"}', b'{"type":"text-delta","delta":"a"}'], 1))
    await writer.flush()
    try:
        remote = await reader.find("c1")
        assert remote is not None
        reading = asyncio.create_task(remote_frames(remote))
        await asyncio.sleep(1.5)  # quiet past one blocking read: the reader asks
        assert not reading.done()
        log.append(numbered_frames([b'{"type":"finish"}'], log.next_seq))
        log.close()
        await writer.flush()
        assert types(await reading) == ["start", "text-delta", "finish"]
    finally:
        await away.dispose()


async def test_a_stop_just_after_redis_came_back_reaches_the_owner(
    worker: WorkerFactory,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    private_redis: RedisServer,
) -> None:
    async with worker("a", private_redis.url) as a, worker("b", private_redis.url) as b:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=1000, delay=0.02))
        gen = await a.reply(chat_id=chat_id, content="hi")
        await read_until(gen.subscribe(), deltas(1))
        async with outage(private_redis):
            await asyncio.sleep(1.0)  # both buses lose their subscription
        # At once: neither bus may have subscribed again yet.
        assert await b.stop(chat_id) is True
        await gen.wait()
        assert gen.status == "stopped"
        assert (await store.get_message(gen.message_id)).status == "stopped"
