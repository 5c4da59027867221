"""Redis-backed event logs: a generation's frames as another worker reads them.

The owner writes through a `RedisWriter` on one connection pool; the "other worker"
reads through a second pool, so nothing is shared but the Redis server.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamkeep.generation.log import EventLog
from streamkeep.scaleout import FramesLost, Keys, RedisEventLog, RedisWriter, RemoteGeneration
from streamkeep.sse import numbered_frames
from tests.conftest import TEST_REDIS_URL
from tests.scaleout.waits import eventually
from tests.server.proxy import Proxy
from tests.server.sse import Event, parse_block

pytestmark = pytest.mark.redis

_ID = re.compile(rb"^id: (\d+)$", re.M)


def frames(first: int, count: int, tag: str = "") -> list[bytes]:
    payloads = [b'{"type":"text-delta","delta":"%s%d"}' % (tag.encode(), n) for n in range(count)]
    return numbered_frames(payloads, first)


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
    reader = remote.read(after=4)
    got = await asyncio.wait_for(anext(reader), 10)
    assert seqs(got) == list(range(5, 11))  # the replay: what the stream held
    for _ in range(5):  # live: the same reader asks for more, then each batch lands
        waiting = asyncio.ensure_future(anext(reader))
        batch = frames(log.next_seq, 3)
        sent += batch
        log.append(batch)
        await writer.flush()
        live = await asyncio.wait_for(waiting, 10)
        assert live == b"".join(batch)  # that batch, once
        got += live
    log.close()
    await writer.flush()
    got += b"".join([chunk async for chunk in reader])

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
            return not await redis.exists(key)

        await eventually(expired)
        assert await RedisEventLog.open_remote(redis, "g1", keys=keys) is None
    finally:
        await writer.aclose()


async def test_unknown_generations_have_no_stream(redis: aioredis.Redis, keys: Keys) -> None:
    assert not await redis.exists(keys.generation("nope"))
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
        other_redis, "g1", keys=keys, still_running=still_running, block_ms=50, drain_ms=100
    )
    assert remote is not None
    reader = asyncio.create_task(read_all(remote))
    await asyncio.sleep(0.2)
    assert not reader.done()  # waiting for more: the owner is alive
    running = False  # e.g. the reaper marked it interrupted
    assert seqs(await asyncio.wait_for(reader, 5)) == [1, 2]
    assert not remote.closed


# -- a reader's end races the owner's last flush ------------------------------------------


class Interleaving(aioredis.Redis):
    """A reader's client that runs `before_xrevrange` once, just before its next
    XREVRANGE (a reader looks at the stream's end after an XREAD that found nothing)."""

    before_xrevrange: Callable[[], Awaitable[None]] | None = None

    async def xrevrange(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        hook, self.before_xrevrange = self.before_xrevrange, None
        if hook is not None:
            await hook()
        return await super().xrevrange(*args, **kwargs)


async def test_a_reader_gets_the_last_frames_that_land_after_the_owner_is_done(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    """The owner stores the answer (the database: not running) THEN appends its last
    frames, which its writer sends a moment later: a reader whose XREAD timed out in
    between, and which asks the database then, still gets them."""
    writer = RedisWriter(redis)  # not started: the test's flushes say when frames land
    log = new_log(writer, keys, "g1")
    sent = frames(1, 3)
    log.append(sent)
    await writer.flush()
    landing: list[asyncio.Task[None]] = []

    async def flush_later() -> None:
        await asyncio.sleep(0.3)
        await writer.flush()

    async def still_running() -> bool:
        if not log.closed:  # the answer is stored; the last frames are not sent yet
            sent.extend(frames(log.next_seq, 3, "last"))
            log.append(sent[3:])
            log.close()
            landing.append(asyncio.create_task(flush_later()))
        return False

    remote = await RedisEventLog.open_remote(
        other_redis, "g1", keys=keys, still_running=still_running, block_ms=50
    )
    assert remote is not None
    got = await asyncio.wait_for(read_all(remote), 10)
    await asyncio.gather(*landing)
    assert seqs(got) == [1, 2, 3, 4, 5, 6] and got == b"".join(sent)
    assert remote.closed


async def test_a_reader_gets_the_last_frames_when_the_end_lands_after_its_read_timed_out(
    redis: aioredis.Redis, keys: Keys
) -> None:
    """The last frames and the close marker land between the reader's empty XREAD and
    its look at the stream's end: it must read them, not just see the end and leave."""
    writer = RedisWriter(redis)
    log = new_log(writer, keys, "g1")
    sent = frames(1, 3)
    log.append(sent)
    await writer.flush()
    reader_redis = cast(Interleaving, Interleaving.from_url(TEST_REDIS_URL))
    try:
        remote = await RedisEventLog.open_remote(reader_redis, "g1", keys=keys, block_ms=50)
        assert remote is not None

        async def the_end_lands() -> None:
            sent.extend(frames(log.next_seq, 3, "last"))
            log.append(sent[3:])
            log.close()
            await writer.flush()

        reader_redis.before_xrevrange = the_end_lands
        got = await asyncio.wait_for(read_all(remote), 10)
    finally:
        await reader_redis.aclose()
    assert reader_redis.before_xrevrange is None  # the race did happen
    assert seqs(got) == [1, 2, 3, 4, 5, 6] and got == b"".join(sent)
    assert remote.closed


# -- frames lost for a reader: an error chunk, not a broken stream -------------------------


async def trimmed_stream(redis: aioredis.Redis, keys: Keys, count: int = 400) -> None:
    """A closed stream of `count` frames, one per entry, trimmed to ~the last 10."""
    writer = RedisWriter(redis, maxlen=10)  # approximate: trims whole nodes of ~100
    log = new_log(writer, keys, "g1")
    for _ in range(count):
        log.append(frames(log.next_seq, 1))
        await writer.flush()  # one entry per frame
    log.close()
    await writer.flush()


def sse_events(raw: bytes) -> list[Event]:
    return [parse_block(block) for block in raw.decode().split("\n\n") if block]


async def test_a_resume_past_trimmed_frames_ends_with_an_error_chunk(
    redis: aioredis.Redis,
    other_redis: aioredis.Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await trimmed_stream(redis, keys)
    remote = await RedisEventLog.open_remote(other_redis, "g1", keys=keys)
    assert remote is not None
    generation = RemoteGeneration("g1", "chat-1", "msg-1", remote)

    with caplog.at_level(logging.WARNING, logger="streamkeep.scaleout.remote"):
        raw = b"".join([c async for c in generation.subscribe(after=0)])  # no exception
    events = sse_events(raw)
    assert [e.type for e in events] == ["error", "[DONE]"]
    assert "reload" in events[0].data["errorText"]
    assert [e.seq for e in events] == [None, None]  # no id: the client's last id stays
    assert any("g1" in r.getMessage() and "no longer" in r.getMessage() for r in caplog.records)

    # The frames still in the stream are served as usual.
    tail = sse_events(b"".join([c async for c in generation.subscribe(after=399)]))
    assert [(e.seq, e.type) for e in tail] == [(400, "text-delta")]


async def test_redis_lost_during_a_resume_ends_with_an_error_chunk(
    writer: RedisWriter, keys: Keys
) -> None:
    log = new_log(writer, keys, "g1")
    log.append(frames(1, 2))
    await writer.flush()
    target = urlsplit(TEST_REDIS_URL)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    through_proxy = aioredis.from_url(
        f"redis://127.0.0.1:{proxy.port}{target.path}", retry=Retry(NoBackoff(), 0)
    )
    try:
        remote = await RedisEventLog.open_remote(through_proxy, "g1", keys=keys)
        assert remote is not None
        stream = RemoteGeneration("g1", "chat-1", "msg-1", remote).subscribe()
        first = sse_events(await asyncio.wait_for(anext(stream), 10))
        assert [e.seq for e in first] == [1, 2]
        await proxy.cut()  # while the reader waits for more
        rest = sse_events(b"".join([c async for c in stream]))
        assert [e.type for e in rest] == ["error", "[DONE]"]
    finally:
        await through_proxy.aclose()
        await proxy.cut()


# -- how much of a live stream is kept: frames, not flushes --------------------------------


async def test_a_stream_keeps_its_last_maxlen_frames_however_they_were_batched(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    writer = RedisWriter(redis, maxlen=100)
    log = new_log(writer, keys, "g1")
    for _ in range(10):  # 1,000 frames in 10 flushes: 10 entries of 100 frames
        log.append(frames(log.next_seq, 100))
        await writer.flush()
    log.close()
    await writer.flush()
    entries = await redis.xrange(keys.generation("g1"))
    kept = sum(len(fields) for _, fields in entries) - 1  # less the end marker
    assert 100 <= kept < 1000
    remote = await open_remote(other_redis, keys, "g1")
    with pytest.raises(FramesLost):
        await read_all(remote, after=0)
    assert seqs(await read_all(remote, after=900)) == list(range(901, 1001))


@pytest.mark.slow
async def test_a_long_reply_sent_frame_by_frame_replays_from_the_start(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    """12,000 frames of one generation, each in its own flush (one token at a time):
    by default all of them stay for a reader on another worker."""
    writer = RedisWriter(redis)
    log = new_log(writer, keys, "g1")
    for _ in range(12_000):
        log.append(frames(log.next_seq, 1))
        await writer.flush()
    log.close()
    await writer.flush()
    remote = await open_remote(other_redis, keys, "g1")
    got = await asyncio.wait_for(read_all(remote, after=0), 30)
    assert seqs(got) == list(range(1, 12_001))


async def test_a_stream_numbered_on_from_an_earlier_generation_reads_whole_after_its_ids(
    writer: RedisWriter, other_redis: aioredis.Redis, keys: Keys
) -> None:
    # A chat's second generation numbers its frames from 101: a reader holding an id
    # of the first one (40) gets this one from its start, not from 41 (nothing).
    log = RedisEventLog(writer, keys.generation("g2"), first_seq=101)
    assert log.first_seq == log.next_seq == 101
    log.append(frames(101, 10))
    await writer.flush()
    remote = await RedisEventLog.open_remote(other_redis, "g2", keys=keys, first_seq=101)
    assert remote is not None and remote.first_seq == 101 and remote.next_seq == 111
    reader = remote.read(after=40)
    got = await asyncio.wait_for(anext(reader), 10)
    assert seqs(got) == list(range(101, 111))  # from its start, not from 41
    waiting = asyncio.ensure_future(anext(reader))  # then live, as they land
    log.append(frames(111, 5))
    log.close()
    await writer.flush()
    got += await asyncio.wait_for(waiting, 10)
    got += b"".join([chunk async for chunk in reader])
    assert seqs(got) == list(range(101, 116))
    assert await read_all(log, after=40) == got  # the owner's readers, from memory
    assert seqs(await read_all(remote, after=105)) == list(range(106, 116))
    assert await read_all(remote, after=115) == b""

    # Found without its chat's pointer, the first frame is learned from the stream.
    blind = await RedisEventLog.open_remote(other_redis, "g2", keys=keys, first_seq=None)
    assert blind is not None and blind.first_seq is None
    assert await read_all(blind, after=40) == got
    assert blind.first_seq == 101
    blind = await RedisEventLog.open_remote(other_redis, "g2", keys=keys, first_seq=None)
    assert blind is not None
    assert seqs(await read_all(blind, after=112)) == [113, 114, 115]


async def test_an_offset_stream_trimmed_past_its_start_is_still_reported(
    redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    writer = RedisWriter(redis, maxlen=10)  # approximate: trims whole nodes of ~100
    log = RedisEventLog(writer, keys.generation("g1"), first_seq=1001)
    for _ in range(400):
        log.append(frames(log.next_seq, 1))
        await writer.flush()  # one entry per frame
    log.close()
    await writer.flush()
    assert await redis.xlen(keys.generation("g1")) < 400
    remote = await RedisEventLog.open_remote(other_redis, "g1", keys=keys, first_seq=1001)
    assert remote is not None
    with pytest.raises(FramesLost):
        await read_all(remote, after=40)  # an earlier generation's id: from 1001, trimmed
    assert seqs(await read_all(remote, after=1399)) == [1400]
