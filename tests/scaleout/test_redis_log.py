"""Redis-backed event logs: a generation's frames as another worker reads them.

The owner writes through a `RedisWriter` on one connection pool; the "other worker"
reads through a second pool, so nothing is shared but the Redis server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streamkeep.generation.log import EventLog
from streamkeep.generation.ui_stream import sse_frames
from streamkeep.scaleout import FramesLost, Keys, RedisEventLog, RedisWriter
from streamkeep.scaleout.redis_log import stream_exists
from tests.scaleout.waits import eventually

pytestmark = pytest.mark.redis

_ID = re.compile(rb"^id: (\d+)$", re.M)


def frames(first: int, count: int, tag: str = "") -> list[bytes]:
    payloads = [b'{"type":"text-delta","delta":"%s%d"}' % (tag.encode(), n) for n in range(count)]
    return sse_frames(payloads, first)


def seqs(data: bytes) -> list[int]:
    return [int(m) for m in _ID.findall(data)]


async def read_all(log: EventLog, after: int = 0) -> bytes:
    return b"".join([chunk async for chunk in log.read(after)])


@pytest.fixture
async def writer(redis: aioredis.Redis) -> AsyncIterator[RedisWriter]:
    w = RedisWriter(redis, expire_after=60.0)
    w.start()
    try:
        yield w
    finally:
        await w.aclose()


def new_log(writer: RedisWriter, keys: Keys, generation_id: str) -> RedisEventLog:
    return RedisEventLog(writer, keys.generation(generation_id))


async def open_remote(other: aioredis.Redis, keys: Keys, generation_id: str) -> EventLog:
    remote = await RedisEventLog.open_remote(other, generation_id, keys=keys)
    assert remote is not None
    return remote


async def test_replay_after_n_then_live_frames_exactly_once(
    writer: RedisWriter, other_redis: aioredis.Redis, keys: Keys
) -> None:
    log = new_log(writer, keys, "g1")
    sent = frames(1, 10)
    log.append(sent)
    await writer.flush()

    remote = await open_remote(other_redis, keys, "g1")
    assert remote.next_seq == 11 and not remote.closed
    reader = asyncio.create_task(read_all(remote, after=4))
    for _ in range(5):  # live: each batch lands while the remote reader waits
        batch = frames(log.next_seq, 3)
        sent += batch
        log.append(batch)
        await writer.flush()
        await asyncio.sleep(0.01)
    log.close()
    await writer.flush()

    got = await asyncio.wait_for(reader, 10)
    assert seqs(got) == list(range(5, 26))
    assert got == b"".join(sent[4:])
    # The owner's own readers read the same frames from memory.
    assert await read_all(log, after=4) == got


async def test_a_reader_that_has_everything_ends_at_the_close(
    writer: RedisWriter, other_redis: aioredis.Redis, keys: Keys
) -> None:
    log = new_log(writer, keys, "g1")
    log.append(frames(1, 3))
    log.close()
    await writer.flush()
    remote = await open_remote(other_redis, keys, "g1")
    assert remote.closed and remote.next_seq == 4
    assert seqs(await read_all(remote, after=0)) == [1, 2, 3]
    assert await read_all(remote, after=3) == b""
    assert await read_all(remote, after=50) == b""  # past the end: nothing, no hang


async def test_concurrent_generations_keep_their_own_order_without_loss(
    writer: RedisWriter, other_redis: aioredis.Redis, keys: Keys
) -> None:
    count, per = 20, 60
    logs = [new_log(writer, keys, f"g{i}") for i in range(count)]
    for i, log in enumerate(logs):
        log.append(frames(1, 1, f"g{i}-"))
    await writer.flush()
    remotes = [await open_remote(other_redis, keys, f"g{i}") for i in range(count)]
    readers = [asyncio.create_task(read_all(r)) for r in remotes]

    async def produce(i: int, log: RedisEventLog) -> None:
        for _ in range(per - 1):
            log.append(frames(log.next_seq, 1, f"g{i}-"))
            await asyncio.sleep(0)  # interleave with the other generations and the writer
        log.close()

    await asyncio.gather(*(produce(i, log) for i, log in enumerate(logs)))
    results = await asyncio.wait_for(asyncio.gather(*readers), 20)
    for i, got in enumerate(results):
        assert seqs(got) == list(range(1, per + 1))
        assert got == await read_all(logs[i])
        assert got.count(b'"g%d-' % i) == per


async def test_appends_of_many_generations_are_batched(
    redis: aioredis.Redis, writer: RedisWriter, keys: Keys
) -> None:
    """Observed with MONITOR: 1,000 frames of 10 generations appended in one moment
    reach Redis as one XADD per generation (plus one per close marker)."""
    seen: list[str] = []
    sentinel = f"{keys.prefix}sentinel"
    async with redis.monitor() as monitor:
        await redis.get(f"{keys.prefix}warmup")

        async def watch() -> None:
            async for info in monitor.listen():
                command = str(info.get("command", ""))
                if keys.prefix in command:
                    seen.append(command)
                    if sentinel in command:
                        return

        watcher = asyncio.create_task(watch())
        logs = [new_log(writer, keys, f"g{i}") for i in range(10)]
        for log in logs:
            for _ in range(100):  # token by token, no await between: one moment
                log.append(frames(log.next_seq, 1))
            log.close()
        await writer.flush()
        await redis.get(sentinel)
        await asyncio.wait_for(watcher, 10)

    xadds = [c for c in seen if c.upper().startswith("XADD")]
    assert len(xadds) == 20, xadds[:5]
    assert sum(1 for c in xadds if " end " in f"{c} ") == 10


async def test_the_stream_expires_after_the_end_not_before(
    redis: aioredis.Redis, keys: Keys
) -> None:
    writer = RedisWriter(redis, expire_after=0.3)
    writer.start()
    try:
        log = new_log(writer, keys, "g1")
        log.append(frames(1, 2))
        await writer.flush()
        key = keys.generation("g1")
        assert await redis.pttl(key) == -1  # live: no expiry
        log.close()
        await writer.flush()
        assert 0 < await redis.pttl(key) <= 300

        async def expired() -> bool:
            return not await stream_exists(redis, "g1", keys)

        await eventually(expired)
        assert await RedisEventLog.open_remote(redis, "g1", keys=keys) is None
    finally:
        await writer.aclose()


async def test_unknown_generations_have_no_stream(redis: aioredis.Redis, keys: Keys) -> None:
    assert not await stream_exists(redis, "nope", keys)
    assert await RedisEventLog.open_remote(redis, "nope", keys=keys) is None


async def test_a_trimmed_stream_is_reported_not_silently_skipped(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    writer = RedisWriter(redis, maxlen=10)  # approximate: trims whole nodes of ~100
    writer.start()
    try:
        log = new_log(writer, keys, "g1")
        for _ in range(400):
            log.append(frames(log.next_seq, 1))
            await writer.flush()  # one entry per frame
        log.close()
        await writer.flush()
    finally:
        await writer.aclose()
    assert await redis.xlen(keys.generation("g1")) < 400
    remote = await open_remote(other_redis, keys, "g1")
    with pytest.raises(FramesLost):
        await read_all(remote, after=0)
    assert seqs(await read_all(remote, after=399)) == [400]


async def test_a_remote_reader_stops_waiting_when_the_owner_is_gone(
    writer: RedisWriter, other_redis: aioredis.Redis, keys: Keys
) -> None:
    log = new_log(writer, keys, "g1")
    log.append(frames(1, 2))
    await writer.flush()
    running = True

    async def still_running() -> bool:
        return running

    remote = await RedisEventLog.open_remote(
        other_redis, "g1", keys=keys, still_running=still_running, block_ms=50
    )
    assert remote is not None
    reader = asyncio.create_task(read_all(remote))
    await asyncio.sleep(0.2)
    assert not reader.done()  # waiting for more: the owner is alive
    running = False  # e.g. the reaper marked it interrupted
    assert seqs(await asyncio.wait_for(reader, 5)) == [1, 2]
    assert not remote.closed
