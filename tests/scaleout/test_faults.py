"""Real faults on real processes: Redis and PostgreSQL restarted under live replies on
two workers, and a worker SIGKILLed while Redis is down.

The workers are `streamkeep serve` processes on a private `redis-server` and a private
PostgreSQL cluster (tests/services.py: the shared servers are never touched), with the
fake provider streaming slowly so that replies are live across the fault. The restarts
run two single-worker servers, so that a test knows which worker each request reaches
(a resume on the worker that does not run the reply goes through Redis); the SIGKILL
runs `--workers 2`, whose parent replaces the killed worker. What must
hold: every reply ends in a final status with its text stored, no reader hangs, and
`/readyz` reports the outage. How fast things recovered is printed (`-s`: lines
starting `TIMINGS`), never asserted: waits only have generous bounds.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.fakes.upstream import FakeUpstream
from tests.scaleout.faults import (
    Read,
    Timings,
    assert_stored_whole,
    chat_of,
    db_of,
    first_reply,
    live_replies,
    new_chat,
    new_keys,
    owners,
    reply,
    resume,
    server,
    servers,
    stored_messages,
    until_ready,
)
from tests.scaleout.test_supervisor import workers_of
from tests.scaleout.waits import eventually
from tests.services import PostgresServer, RedisServer, outage

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

# A reply the fault lands in the middle of: about 12 s of tokens.
LONG = "[[tokens=300 delay=0.04]]"
# A reply that ends while a service is down, when started just before: about 2.4 s.
SHORT = "[[tokens=60 delay=0.04]]"
# Tokens further apart than a remote reader's blocking read (1 s): about 8 s.
PACED = "[[tokens=7 delay=1.3]]"
DOWN_FOR = 3.0  # seconds a restarted service stays down (at least)


async def test_redis_restarted_under_live_replies_on_two_workers(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    private_redis: RedisServer,
    private_postgres: PostgresServer,
) -> None:
    db_url = db_of(private_postgres)
    t = Timings("Redis restart")
    with servers(tmp_path, fake_upstream, db_url, private_redis) as (a, b):
        await until_ready(a)
        await until_ready(b)
        other = {a: b, b: a}
        replies = {url: await live_replies(url, 2, LONG) for url in (a, b)}
        owned = [(url, r) for url in (a, b) for r in replies[url]]
        # Each reply read on the worker that does not run it too: through Redis.
        before = [resume(other[url], chat_of(r)) for url, r in owned]
        for read in before:
            await eventually(lambda read=read: read.deltas >= 1, within=30)  # type: ignore[misc]

        async with outage(private_redis):
            t.mark("redis down")
            for url in (a, b):
                await until_ready(url, ready=False, check="redis")
            t.mark("readyz reports redis down")
            # Readers that come now: on the owner (from memory), elsewhere (refused).
            during = [resume(url, chat_of(r)) for url, r in owned]
            during += [resume(other[url], chat_of(r), 3) for url, r in owned]
            started_during = reply(a, await new_chat(a), f"{LONG} during")  # runs too
            await asyncio.sleep(DOWN_FOR)
        t.mark("redis back")  # empty: every stream and pointer is gone

        for url in (a, b):
            t.mark(f"ready {url}", await until_ready(url, check="redis"))
        t.mark("first new reply", await first_reply(b))
        # Resumed on the other worker from before the outage: the whole rest, as the
        # owner streamed it (it wrote its streams again when it found Redis empty).
        every = [*owned, (a, started_during)]  # the last one's frames all waited for Redis
        after = [(r, resume(other[url], chat_of(r), 4)) for url, r in every]
        # A stop through the other worker reaches the owner (the control bus is back).
        stopped = reply(a, await new_chat(a), f"{LONG} to stop")
        await eventually(lambda: stopped.deltas >= 1, within=30)
        async with httpx.AsyncClient(base_url=b, timeout=30) as client:
            r = await client.post(f"/api/chats/{chat_of(stopped)}/stop")
            assert r.json() == {"stopped": True}, r.text
        await stopped.ended()
        assert "abort" in stopped.types, stopped.describe()
        found = await stored_messages(db_url, [stopped.message_id])
        assert found[stopped.message_id]["status"] == "stopped"
        await assert_stored_whole(db_url, [r for _, r in every])
        for own, read in after:
            await read.ended()
            assert read.events == [e for e in own.events if (e.seq or 0) > 4], read.describe()
        # Every reader ended: whole, with an error chunk (its stream was lost), or a 503.
        for read in before + during:
            await read.ended()
            assert read.broken is None, read.describe()
            if read.status == 200:
                assert read.types[-1] == "[DONE]", read.describe()
            else:
                assert read.status == 503, read.describe()
                assert read.body["error"]["type"] == "redis_unavailable"
        assert all(r.finished for r in during[: len(owned)])  # the owners' own readers
        assert [r.status for r in during[len(owned) :]] == [503] * len(owned)
        assert all("error" in r.types for r in before)  # told their live stream was lost
        t.report(
            ("redis down", "readyz reports redis down"),
            *(("redis back", f"ready {url}") for url in (a, b)),
            ("redis back", "first new reply"),
        )


async def test_postgres_restarted_under_live_replies_on_two_workers(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    private_redis: RedisServer,
    private_postgres: PostgresServer,
) -> None:
    db_url = db_of(private_postgres)
    t = Timings("PostgreSQL restart")
    with servers(tmp_path, fake_upstream, db_url, private_redis) as (a, b):
        await until_ready(a)
        await until_ready(b)
        other = {a: b, b: a}
        long = [(url, r) for url in (a, b) for r in await live_replies(url, 1, LONG)]
        short = [(url, r) for url in (a, b) for r in await live_replies(url, 1, SHORT)]
        # Quiet for longer than a remote reader's blocking read between its tokens: its
        # reader asks the database, while it is away, whether the reply still runs.
        paced = reply(a, await new_chat(a), f"{PACED} paced")
        await eventually(lambda: paced.deltas >= 1, within=30)
        long.append((a, paced))
        remote = [resume(other[url], chat_of(r)) for url, r in long + short]

        async with outage(private_postgres):
            t.mark("database down")
            for url in (a, b):
                await until_ready(url, ready=False, check="database")
            t.mark("readyz reports database down")
            refused = reply(a, chat_of(long[1][1]), "while the database is away")
            for _, read in short:  # they end now: their final writes fail
                await read.ended()
            t.mark("short replies ended")
            await asyncio.sleep(
                max(0.0, DOWN_FOR - t.since("database down", "short replies ended"))
            )
        t.mark("database back")

        for url in (a, b):
            t.mark(f"ready {url}", await until_ready(url, check="database"))
        t.mark("first new reply", await first_reply(b))
        await refused.ended()
        assert refused.status == 503, refused.describe()
        assert refused.body["error"]["type"] == "database_unavailable"
        # The short replies told their clients they were not stored yet; now they are.
        for _, read in short:
            assert read.finished and read.metadata()["stored"] is False, read.describe()

        async def short_stored() -> bool:
            found = await stored_messages(db_url, [r.message_id for _, r in short])
            return all(m["status"] == "complete" for m in found.values())

        await eventually(short_stored, within=60, poll=0.05)
        t.mark("short replies stored")
        await assert_stored_whole(db_url, [r for _, r in long + short])
        assert all(r.metadata()["stored"] is True for _, r in long)
        for read in remote:  # Redis was there all along: they read every reply whole
            await read.ended()
            assert read.finished, read.describe()
        t.report(
            ("database down", "readyz reports database down"),
            *(("database back", f"ready {url}") for url in (a, b)),
            ("database back", "first new reply"),
            ("database back", "short replies stored"),
        )


async def test_a_worker_killed_while_redis_is_down(
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    private_redis: RedisServer,
    private_postgres: PostgresServer,
) -> None:
    db_url = db_of(private_postgres)
    t = Timings("SIGKILL while Redis is down")
    keys = new_keys()
    env = {"STREAMKEEP_REDIS_URL": private_redis.url, "STREAMKEEP_WORKER_STALE_AFTER": "3"}
    redis = aioredis.from_url(private_redis.url)
    with server(tmp_path / "w", fake_upstream, db_url, keys, "--workers", "2", **env) as served:
        url, parent = served.url, served.proc.pid
        await until_ready(url)

        async def both_registered() -> bool:
            return len([k async for k in redis.scan_iter(keys.worker("*"))]) == 2

        await eventually(both_registered, within=60, poll=0.1)
        await redis.aclose()
        # Replies on new connections, until both workers run some.
        replies: list[Read] = []
        async with asyncio.timeout(60):
            while len(replies) < 4 or len(set((await owners(db_url)).values())) < 2:
                replies.append(reply(url, await new_chat(url), f"{LONG} {len(replies)}"))
                await replies[-1].answered.wait()
        owner = await owners(db_url)
        victim = owner[replies[0].message_id]
        doomed = [r for r in replies if owner[r.message_id] == victim]
        kept = [r for r in replies if owner[r.message_id] != victim]

        async def checkpointed() -> bool:  # what an interrupt keeps
            found = await stored_messages(db_url, [r.message_id for r in doomed])
            return all(m["text"] for m in found.values())

        await eventually(checkpointed, within=60, poll=0.05)

        async with outage(private_redis):
            t.mark("redis down")
            await until_ready(url, ready=False, check="redis")
            t.mark("readyz reports redis down")
            os.kill(victim, signal.SIGKILL)
            t.mark("worker killed")

            async def interrupted() -> None:
                async def all_interrupted() -> bool:
                    found = await stored_messages(db_url, [r.message_id for r in doomed])
                    return all(m["status"] == "interrupted" for m in found.values())

                await eventually(all_interrupted, within=60, poll=0.05)
                t.mark("its replies interrupted")

            async def replaced() -> None:
                await eventually(lambda: victim not in workers_of(parent), within=60)
                await eventually(lambda: len(workers_of(parent)) == 2, within=60)
                t.mark("worker replaced")

            await asyncio.gather(interrupted(), replaced())
            t.mark("recovered")
            await asyncio.sleep(max(0.0, DOWN_FOR - t.since("redis down", "recovered")))
        t.mark("redis back")

        t.mark("ready", await until_ready(url, check="redis"))
        t.mark("first new reply", await first_reply(url))
        for _ in range(4):  # on new connections: whichever worker takes them
            await first_reply(url)
        # The other worker's replies went on through all of it.
        await assert_stored_whole(db_url, kept)
        # The killed worker's: their clients' connections broke; stored `interrupted`
        # with the last checkpoint.
        found = await stored_messages(db_url, [r.message_id for r in doomed])
        for read in doomed:
            await read.ended()
            assert read.broken is not None and not read.finished, read.describe()
            stored = found[read.message_id]
            assert stored["status"] == "interrupted", stored
            assert stored["text"] and read.text.startswith(stored["text"])
        t.report(
            ("redis down", "readyz reports redis down"),
            ("worker killed", "its replies interrupted"),
            ("worker killed", "worker replaced"),
            ("redis back", "ready"),
            ("redis back", "first new reply"),
        )
