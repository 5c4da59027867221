"""The load client: concurrent streams through one path, timed per request.

aiohttp (C parser) keeps this client's CPU low: it shares the machine's cores with the
servers being measured, and its own CPU is reported so a saturated client shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass

import aiohttp
import orjson

from bench.paths import Path_
from bench.procs import cpu_seconds, peak_rss_mb


@dataclass
class Scenario:
    name: str
    streams: int  # at once
    tokens: int  # per stream
    delay: float  # seconds between tokens (0: as fast as the upstream writes)
    requests: int = 0  # > 0: this many requests, `streams` at a time (per-request cost)


@dataclass
class Stream:
    ttft: float  # seconds from sending the request to the first content token
    total: float  # seconds from sending the request to the body's end
    chunks: int  # content tokens received


@dataclass
class Run:
    streams: list[Stream]  # in request order, so paths can be paired request by request
    wall: float
    cpu: float  # the path's own processes (0 for direct)
    upstream_cpu: float
    client_cpu: float
    peak_rss_mb: float
    db_writes: float | None  # write statements (streamkeep's /metrics), None if unknown
    db_commits: float | None  # transactions, likewise


def prompt(scenario: Scenario) -> str:
    return f"[[tokens={scenario.tokens} delay={scenario.delay:g}]] benchmark"


async def openai_stream(session: aiohttp.ClientSession, path: Path_, content: str) -> Stream:
    body = {
        "model": path.model,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    started = time.perf_counter()
    ttft, chunks, rest = 0.0, 0, b""
    async with session.post(f"{path.url}/chat/completions", json=body, headers=path.headers) as r:
        r.raise_for_status()
        async for data in r.content.iter_any():
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                # Parsed, not pattern-matched: each server spaces its JSON its own way.
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    choices = orjson.loads(line[5:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        if not chunks:
                            ttft = time.perf_counter() - started
                        chunks += 1
    return Stream(ttft, time.perf_counter() - started, chunks)


async def chat_stream(
    session: aiohttp.ClientSession, path: Path_, chat_id: str, content: str
) -> Stream:
    started = time.perf_counter()
    ttft, chunks = 0.0, 0
    url = f"{path.url}/api/chats/{chat_id}/messages"
    async with session.post(url, json={"content": content}) as r:
        r.raise_for_status()
        async for data in r.content.iter_any():
            n = data.count(b'"type":"text-delta"')  # streamkeep's own UI stream
            if n and not chunks:
                ttft = time.perf_counter() - started
            chunks += n
    return Stream(ttft, time.perf_counter() - started, chunks)


async def metric(session: aiohttp.ClientSession, path: Path_, name: str) -> float:
    async with session.get(f"{path.url.removesuffix('/v1')}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# As the old benchmarks/chat_server.py counted them; /metrics is one worker's only.
WRITES = 'streamkeep_db_statements_total{kind="write"}'
COMMITS = "streamkeep_db_commits_total"


async def run(path: Path_, scenario: Scenario, upstream_pid: int, settle: float) -> Run:
    content = prompt(scenario)
    total = scenario.requests or scenario.streams
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        chats: list[str] = []
        if path.kind == "chat":  # created before the measured window
            for _ in range(total):
                async with session.post(f"{path.url}/api/chats", json={}) as r:
                    r.raise_for_status()
                    chats.append((await r.json())["id"])
        writes0 = await metric(session, path, WRITES) if path.metrics else 0.0
        commits0 = await metric(session, path, COMMITS) if path.metrics else 0.0

        def one(i: int) -> Coroutine[None, None, Stream]:
            if path.kind == "chat":
                return chat_stream(session, path, chats[i], content)
            return openai_stream(session, path, content)

        pids = path.cpu_pids()
        cpu0, up0, me0 = cpu_seconds(pids), cpu_seconds([upstream_pid]), time.process_time()
        t0 = time.perf_counter()
        if scenario.requests:
            streams: list[Stream] = []
            for start in range(0, total, scenario.streams):
                batch = range(start, min(total, start + scenario.streams))
                streams += await asyncio.gather(*(one(i) for i in batch))
        else:
            streams = list(await asyncio.gather(*(one(i) for i in range(total))))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - cpu0
        up = cpu_seconds([upstream_pid]) - up0
        me = time.process_time() - me0
        writes = commits = None
        if path.metrics:
            await asyncio.sleep(settle)  # the last final writes land before counting
            writes = await metric(session, path, WRITES) - writes0
            commits = await metric(session, path, COMMITS) - commits0
    return Run(streams, wall, cpu, up, me, peak_rss_mb(path.pids()), writes, commits)
