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

from bench.paths import Route
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
    """One request's figures, filled in as its body arrives (a stream cut off by the
    run's deadline keeps what it got)."""

    started: float = 0.0
    ttft: float | None = None  # seconds from sending the request to the first token
    total: float | None = None  # seconds from sending the request to the body's end
    chunks: int = 0  # content tokens received

    def got(self, n: int) -> None:
        if n and self.ttft is None:
            self.ttft = time.perf_counter() - self.started
        self.chunks += n

    def cut(self) -> None:
        """The deadline passed: an unanswered wait counts as lasting until now."""
        now = time.perf_counter() - self.started
        self.ttft = now if self.ttft is None else self.ttft
        self.total = now


@dataclass
class Run:
    streams: list[Stream]  # in request order, so paths can be paired request by request
    wall: float
    cpu: float  # the path's own processes (0 for direct)
    upstream_cpu: float
    client_cpu: float
    peak_rss_mb: float
    timed_out: int  # streams cut off by the deadline
    db_writes: float | None  # write statements (streamkeep's /metrics), None if unknown
    db_commits: float | None  # transactions, likewise


def prompt(scenario: Scenario) -> str:
    return f"[[tokens={scenario.tokens} delay={scenario.delay:g}]] benchmark"


async def check(r: aiohttp.ClientResponse) -> None:
    """An error answer fails the run, saying what the server said."""
    if r.status >= 400:
        raise RuntimeError(f"HTTP {r.status} from {r.url}: {(await r.read())[:300]!r}")


async def openai_stream(
    session: aiohttp.ClientSession, path: Route, content: str, out: Stream
) -> None:
    body = {
        "model": path.model,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    out.started, rest = time.perf_counter(), b""
    async with session.post(f"{path.url}/chat/completions", json=body, headers=path.headers) as r:
        await check(r)
        async for data in r.content.iter_any():
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                # Parsed, not pattern-matched: each server spaces its JSON its own way.
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    choices = orjson.loads(line[5:]).get("choices") or [{}]
                    out.got(bool((choices[0].get("delta") or {}).get("content")))
    out.total = time.perf_counter() - out.started


async def chat_stream(
    session: aiohttp.ClientSession, path: Route, chat_id: str, content: str, out: Stream
) -> None:
    out.started = time.perf_counter()
    url = f"{path.url}/api/chats/{chat_id}/messages"
    async with session.post(url, json={"content": content}) as r:
        await check(r)
        async for data in r.content.iter_any():
            out.got(data.count(b'"type":"text-delta"'))  # streamkeep's own UI stream
    out.total = time.perf_counter() - out.started


async def metric(session: aiohttp.ClientSession, path: Route, name: str) -> float:
    async with session.get(f"{path.url.removesuffix('/v1')}/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# As the old benchmarks/chat_server.py counted them; /metrics is one worker's only.
WRITES = 'streamkeep_db_statements_total{kind="write"}'
COMMITS = "streamkeep_db_commits_total"


async def run(
    path: Route, scenario: Scenario, upstream_pid: int, settle: float, grace: float = 60.0
) -> Run:
    """One run of `scenario` through `path`; a stream not done `grace` seconds after
    its last token was due is cut off (counted in `timed_out`, its chunks so far kept)."""
    content = prompt(scenario)
    total = scenario.requests or scenario.streams
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)  # the run's own deadline applies
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        chats: list[str] = []
        if path.kind == "chat":  # created before the measured window
            for _ in range(total):
                async with session.post(f"{path.url}/api/chats", json={}) as r:
                    r.raise_for_status()
                    chats.append((await r.json())["id"])
        writes0 = await metric(session, path, WRITES) if path.metrics else 0.0
        commits0 = await metric(session, path, COMMITS) if path.metrics else 0.0

        streams = [Stream() for _ in range(total)]

        def one(i: int) -> Coroutine[None, None, None]:
            if path.kind == "chat":
                return chat_stream(session, path, chats[i], content, streams[i])
            return openai_stream(session, path, content, streams[i])

        pids = path.cpu_pids()
        cpu0, up0, me0 = cpu_seconds(pids), cpu_seconds([upstream_pid]), time.process_time()
        t0 = time.perf_counter()
        timed_out = 0
        for start in range(0, total, scenario.streams):  # one batch unless `requests`
            batch = range(start, min(total, start + scenario.streams))
            tasks = [asyncio.ensure_future(one(i)) for i in batch]
            _, late = await asyncio.wait(tasks, timeout=scenario.tokens * scenario.delay + grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for i in batch:
                if streams[i].total is None:
                    streams[i].cut()
            timed_out += len(late)
            for task in tasks:  # an HTTP error fails the run
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - cpu0
        up = cpu_seconds([upstream_pid]) - up0
        me = time.process_time() - me0
        writes = commits = None
        if path.metrics:
            await asyncio.sleep(settle)  # the last final writes land before counting
            writes = await metric(session, path, WRITES) - writes0
            commits = await metric(session, path, COMMITS) - commits0
    return Run(streams, wall, cpu, up, me, peak_rss_mb(path.pids()), timed_out, writes, commits)
