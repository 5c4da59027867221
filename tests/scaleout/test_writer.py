"""The process's Redis writer when Redis goes away for a while: nothing lost, no repeats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys, RedisEventLog, RedisWriter
from tests.conftest import TEST_REDIS_URL
from tests.scaleout.test_redis_log import frames, read_all, seqs
from tests.scaleout.waits import eventually
from tests.server.proxy import Proxy
from tests.services import RedisServer

pytestmark = pytest.mark.redis


async def test_frames_queued_during_an_outage_arrive_once_it_ends(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    target = urlsplit(TEST_REDIS_URL)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    through_proxy = aioredis.from_url(f"redis://127.0.0.1:{proxy.port}{target.path}")
    writer = RedisWriter(through_proxy)
    writer.start()
    try:
        log = RedisEventLog(writer, keys.generation("g1"))
        sent = frames(1, 5)
        log.append(sent)
        await eventually(lambda: writer.stats.frames == 5)

        await proxy.cut()  # Redis is unreachable: appends still never wait
        for _ in range(5):
            sent += frames(log.next_seq, 1)
            log.append(sent[-1:])
        log.close()
        await eventually(lambda: writer.stats.failures >= 1, within=30)
        assert await read_all(log) == b"".join(sent)  # local readers unaffected

        await proxy.start()  # back, on the same port
        await eventually(lambda: writer.stats.frames == 10, within=30)
        remote = await RedisEventLog.open_remote(other_redis, "g1", keys=keys)
        assert remote is not None and remote.closed
        got = await asyncio.wait_for(read_all(remote), 10)
        assert seqs(got) == list(range(1, 11)) and got == b"".join(sent)
    finally:
        await writer.aclose()
        await through_proxy.aclose()
        await proxy.cut()


@pytest.fixture
async def restartable(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A connection pool to the session's private Redis, which a test may restart."""
    client = aioredis.from_url(private_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def written(
    redis: aioredis.Redis, keys: Keys, generation_id: str, first_seq: int = 1
) -> list[int]:
    """The frame numbers another worker reads from the start of the stream."""
    remote = await RedisEventLog.open_remote(redis, generation_id, keys=keys, first_seq=first_seq)
    assert remote is not None
    return seqs(await asyncio.wait_for(read_all(remote), 10))


async def test_streams_redis_lost_in_an_outage_are_written_again_whole(
    private_redis: RedisServer, restartable: aioredis.Redis, keys: Keys
) -> None:
    # Not started: the test's flushes say when frames land, and in which order.
    writer = RedisWriter(restartable, epoch_key=keys.epoch)
    other = RedisWriter(restartable, epoch_key=keys.epoch)  # another worker's
    live = RedisEventLog(writer, keys.generation("live"), first_seq=41)
    writer.point(keys.chat("c1"), b"pointer of live", stream=live.key)
    ended = RedisEventLog(writer, keys.generation("ended"))
    elsewhere = RedisEventLog(other, keys.generation("elsewhere"))
    live.append(frames(41, 5))
    ended.append(frames(1, 3))
    ended.close()
    elsewhere.append(frames(1, 2))
    await writer.flush()
    await other.flush()

    with private_redis.down():  # it comes back empty, as Redis without persistence
        live.append(frames(46, 5))
        elsewhere.append(frames(3, 1))
        for w in (writer, other):
            with pytest.raises(aioredis.ConnectionError):
                await w.flush()
    # The first writer back marks the new Redis; the other sees that it changed.
    await writer.flush()
    await other.flush()
    assert writer.stats.restores == other.stats.restores == 1
    live.append(frames(51, 2))
    live.close()
    elsewhere.close()
    await writer.flush()
    await other.flush()

    assert await written(restartable, keys, "live", 41) == list(range(41, 53))
    assert await written(restartable, keys, "ended") == [1, 2, 3]
    assert await written(restartable, keys, "elsewhere") == [1, 2, 3]
    assert await restartable.get(keys.chat("c1")) == b"pointer of live"
    assert await restartable.pttl(keys.generation("ended")) > 0  # expiring, as before
    assert writer.stats.restores == other.stats.restores == 1  # once was enough


async def test_a_restart_between_two_flushes_is_repaired_by_the_next_one(
    private_redis: RedisServer, restartable: aioredis.Redis, keys: Keys
) -> None:
    writer = RedisWriter(restartable, epoch_key=keys.epoch)  # not started: flushes by hand
    log = RedisEventLog(writer, keys.generation("g1"))
    writer.point(keys.chat("c1"), b"pointer", stream=log.key)
    log.append(frames(1, 5))
    await writer.flush()
    with private_redis.down():
        pass  # no flush while it was away
    log.append(frames(6, 1))
    for _ in range(3):  # redis-py may retry on a new connection itself, or fail once
        with contextlib.suppress(aioredis.ConnectionError):
            await writer.flush()
            break
    assert writer.stats.restores == 1
    log.close()
    await writer.flush()
    assert await written(restartable, keys, "g1") == list(range(1, 7))
    assert await restartable.get(keys.chat("c1")) == b"pointer"
