"""Scale-out over Redis: how fast a stop reaches the owner, and frames reach a reader on
another worker, with many generations live.

With `--http`, first end to end: two real `streamkeep serve` processes sharing a fresh
PostgreSQL database and Redis, the fake upstream as a third; a reply streams from worker
A while `POST /api/chats/{id}/stop` goes to worker B; measured until B's answer (the
owner stopped and stored it) and until A's client sees the `abort` chunk.

Two connection pools stand for two workers (one process, so one clock):
- stop latency: `ControlBus.publish_stop` on one, until the owner's stop callback runs
  on the other; and a full `ControlBus.stop` round trip (request, stop, acknowledgement);
- frame latency: `--generations` live generations append a frame every `--delay`
  seconds through one `RedisWriter`; readers on the other pool (`RemoteEventLog`) note
  when each frame arrives. Also reported: frames per pipeline (the batching).

    .venv/bin/python benchmarks/scaleout.py [--http] [--redis redis://127.0.0.1:6379/0]
        [--rounds 200] [--generations 100] [--tokens 50] [--delay 0.02]

Goal (the issue's): a stop reaches the owner within 200 ms, from any worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from streamkeep.scaleout import ControlBus, Keys, RedisEventLog, RedisWriter
from streamkeep.sse import numbered_frames


def summary(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name}: n={len(ms)} p50={statistics.median(ms):.2f} ms "
        f"p99={p99:.2f} ms max={ms[-1]:.2f} ms"
    )


async def stop_latency(url: str, keys: Keys, rounds: int) -> None:
    owner_pool, asker_pool = aioredis.from_url(url), aioredis.from_url(url)
    arrived: dict[str, float] = {}
    got = asyncio.Event()

    async def on_stop(chat_id: str) -> bool:
        arrived[chat_id] = time.perf_counter()
        got.set()
        return True

    owner = ControlBus(owner_pool, keys=keys, on_stop=on_stop)
    asker = ControlBus(asker_pool, keys=keys)
    await owner.start()
    await asker.start()
    one_way, round_trip = [], []
    try:
        for n in range(rounds):
            chat = f"chat-{n}"
            got.clear()
            sent = time.perf_counter()
            await asker.publish_stop(chat)
            await got.wait()
            one_way.append(arrived[chat] - sent)
            sent = time.perf_counter()
            assert await asker.stop(f"{chat}-ack")
            round_trip.append(time.perf_counter() - sent)
    finally:
        await asker.aclose()
        await owner.aclose()
        await asker_pool.aclose()
        await owner_pool.aclose()
    print(summary("stop reaches the owner (publish -> callback)", one_way))
    print(summary("stop acknowledged (ControlBus.stop round trip)", round_trip))


async def frame_latency(url: str, keys: Keys, generations: int, tokens: int, delay: float) -> None:
    owner_pool, reader_pool = aioredis.from_url(url), aioredis.from_url(url)
    writer = RedisWriter(owner_pool, expire_after=10.0)
    writer.start()
    sent_at: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    logs = [RedisEventLog(writer, keys.generation(f"g{i}")) for i in range(generations)]
    for i, log in enumerate(logs):
        sent_at[(i, 1)] = time.perf_counter()
        log.append(numbered_frames([b"{}"], 1))
    await writer.flush()

    async def read(i: int) -> None:
        remote = await RedisEventLog.open_remote(reader_pool, f"g{i}", keys=keys)
        assert remote is not None
        seen = 0
        async for chunk in remote.read(0):
            now = time.perf_counter()
            for _ in range(chunk.count(b"\n\n")):
                seen += 1
                latencies.append(now - sent_at[(i, seen)])

    async def produce(i: int, log: RedisEventLog) -> None:
        for _ in range(tokens - 1):
            await asyncio.sleep(delay)
            sent_at[(i, log.next_seq)] = time.perf_counter()
            log.append(numbered_frames([b"{}"], log.next_seq))
        log.close()

    readers = [asyncio.create_task(read(i)) for i in range(generations)]
    await asyncio.gather(*(produce(i, log) for i, log in enumerate(logs)))
    await asyncio.gather(*readers)
    await writer.aclose()
    await owner_pool.aclose()
    await reader_pool.aclose()
    stats = writer.stats
    print(summary(f"frame append -> remote reader ({generations} live generations)", latencies))
    print(
        f"batching: {stats.frames} frames in {stats.flushes} pipelines "
        f"({stats.frames / max(stats.flushes, 1):.1f} frames per round trip)"
    )


ROOT = Path(__file__).resolve().parent.parent
LONG = "[[tokens=100000 delay=0.01]] go"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "tests.fakes.upstream", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_server(env: dict[str, str], home: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
    cmd += ["--data-dir", home, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env})
    return proc, f"http://127.0.0.1:{port}"


def stop_all(procs: list[subprocess.Popen[Any]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()


async def wait_ready(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(600):
        try:
            if (await client.get(f"{url}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


async def one_http_stop(client: httpx.AsyncClient, a: str, b: str) -> tuple[float, float]:
    chat = (await client.post(f"{a}/api/chats", json={})).json()["id"]
    async with client.stream(
        "POST", f"{a}/api/chats/{chat}/messages", json={"content": LONG}
    ) as response:
        chunks = response.aiter_raw()
        async for data in chunks:
            if b"text-delta" in data:
                break
        sent = time.perf_counter()
        stop = asyncio.create_task(client.post(f"{b}/api/chats/{chat}/stop"))
        async for data in chunks:
            if b'"abort"' in data:
                aborted = time.perf_counter() - sent
                break
        answer = await stop
        answered = time.perf_counter() - sent
        assert answer.json() == {"stopped": True}, answer.text
    return answered, aborted


async def http_stop_latency(redis_url: str, database_url: str, keys: Keys, rounds: int) -> None:
    upstream, upstream_url = start_upstream()
    name = f"sk_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = database_url.rpartition("/")
    env = {
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": "x",
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
        "STREAMKEEP_MODEL": "openai/fake-model",
        "STREAMKEEP_DATABASE_URL": f"{base}/{name}",
        "STREAMKEEP_REDIS_URL": redis_url,
        "STREAMKEEP_REDIS_PREFIX": keys.prefix,
    }
    servers = []
    try:
        with tempfile.TemporaryDirectory() as home:
            async with httpx.AsyncClient(timeout=30) as client:
                servers.append(start_server(env, f"{home}/a"))
                await wait_ready(client, servers[0][1])  # migrates the database first
                servers.append(start_server(env, f"{home}/b"))
                await wait_ready(client, servers[1][1])
                answered, aborted = [], []
                for _ in range(rounds):
                    ans, ab = await one_http_stop(client, servers[0][1], servers[1][1])
                    answered.append(ans)
                    aborted.append(ab)
            print(summary("HTTP stop on worker B -> A's client sees abort", aborted))
            print(summary("HTTP stop on worker B -> B answers stopped (stored)", answered))
    finally:
        stop_all([upstream, *(proc for proc, _ in servers)])
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def cleanup(url: str, keys: Keys) -> None:
    client = aioredis.from_url(url)
    stale = [k async for k in client.scan_iter(f"{keys.prefix}*")]
    if stale:
        await client.delete(*stale)
    await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--http", action="store_true", help="also two real servers")
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    keys = Keys(prefix=f"skbench:{uuid.uuid4().hex[:8]}:")
    try:
        if args.http:
            await http_stop_latency(args.redis, args.database, keys, min(args.rounds, 50))
        await stop_latency(args.redis, keys, args.rounds)
        await frame_latency(args.redis, keys, args.generations, args.tokens, args.delay)
    finally:
        await cleanup(args.redis, keys)


if __name__ == "__main__":
    asyncio.run(main())
