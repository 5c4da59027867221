"""The process's Redis writer when Redis goes away for a while: nothing lost, no repeats."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys, RedisEventLog, RedisWriter
from tests.conftest import TEST_REDIS_URL
from tests.scaleout.test_redis_log import frames, read_all, seqs
from tests.scaleout.waits import eventually
from tests.server.proxy import Proxy

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
