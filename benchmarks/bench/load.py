"""The load client: concurrent streams through one path, timed per request.

aiohttp (C parser) keeps this client's CPU low: it shares the machine's cores with the
servers being measured, and its own CPU is reported so a saturated client shows. One
Python process still saturates at 500 streams of 50 tokens/s (even direct then takes
1.5x the answer's second), so a scenario can be split over several client processes
(`clients`): each drives every n-th request, all starting at the same instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

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
    clients: int = 1  # client processes the streams are split over


@dataclass
class Target:
    """What a client process needs of a path (a `Route` holds processes: not picklable)."""

    kind: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    model: str = ""

    @classmethod
    def of(cls, path: Route) -> Target:
        return cls(path.kind, path.url, dict(path.headers), path.model)


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
    session: aiohttp.ClientSession, path: Target, content: str, out: Stream
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
    session: aiohttp.ClientSession, path: Target, chat_id: str, content: str, out: Stream
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


async def drive(
    target: Target,
    scenario: Scenario,
    chats: list[str],
    share: range,
    grace: float,
    start_at: float | None = None,
) -> tuple[list[Stream], int]:
    """Run the requests numbered in `share` (`scenario.streams` at a time, counted over
    all shares), from the wall-clock instant `start_at`; their figures and how many
    were cut off."""
    content = prompt(scenario)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)  # the run's own deadline applies
    streams = {i: Stream() for i in share}
    timed_out = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        def one(i: int) -> Coroutine[None, None, None]:
            if target.kind == "chat":
                return chat_stream(session, target, chats[i], content, streams[i])
            return openai_stream(session, target, content, streams[i])

        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        total = scenario.requests or scenario.streams
        for start in range(0, total, scenario.streams):  # one batch unless `requests`
            batch = [i for i in range(start, min(total, start + scenario.streams)) if i in streams]
            tasks = [asyncio.ensure_future(one(i)) for i in batch]
            if not tasks:
                continue
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
    return list(streams.values()), timed_out


def drive_in_process(
    target: Target,
    scenario: Scenario,
    chats: list[str],
    share: range,
    grace: float,
    start_at: float,
) -> tuple[list[Stream], int, float]:
    """`drive` in a client process of the pool: its figures and the CPU it used."""
    cpu0 = time.process_time()
    streams, timed_out = asyncio.run(drive(target, scenario, chats, share, grace, start_at))
    return streams, timed_out, time.process_time() - cpu0


async def run(
    path: Route,
    scenario: Scenario,
    upstream_pid: int,
    settle: float,
    grace: float = 60.0,
    pool: ProcessPoolExecutor | None = None,
) -> Run:
    """One run of `scenario` through `path`; a stream not done `grace` seconds after
    its last token was due is cut off (counted in `timed_out`, its chunks so far kept).
    With `scenario.clients` > 1, `pool` (that many processes) runs the client."""
    total = scenario.requests or scenario.streams
    target = Target.of(path)
    clients = scenario.clients if pool is not None else 1
    async with aiohttp.ClientSession() as session:
        chats: list[str] = []
        if path.kind == "chat":  # created before the measured window
            for _ in range(total):
                async with session.post(f"{path.url}/api/chats", json={}) as r:
                    r.raise_for_status()
                    chats.append((await r.json())["id"])
        writes0 = await metric(session, path, WRITES) if path.metrics else 0.0
        commits0 = await metric(session, path, COMMITS) if path.metrics else 0.0

        pids = path.cpu_pids()
        cpu0, up0, me0 = cpu_seconds(pids), cpu_seconds([upstream_pid]), time.process_time()
        t0 = time.perf_counter()
        if clients == 1:
            streams, timed_out = await drive(target, scenario, chats, range(total), grace)
            helpers_cpu = 0.0
        else:
            assert pool is not None
            loop = asyncio.get_running_loop()
            start_at = time.time() + 0.2  # every client process starts its share at once
            shares = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool,
                        drive_in_process,
                        target,
                        scenario,
                        chats,
                        range(k, total, clients),
                        grace,
                        start_at,
                    )
                    for k in range(clients)
                )
            )
            by_index: dict[int, Stream] = {}
            for k, (mine, _, _) in enumerate(shares):
                by_index.update(zip(range(k, total, clients), mine, strict=True))
            streams = [by_index[i] for i in range(total)]  # request order, for pairing
            timed_out = sum(late for _, late, _ in shares)
            helpers_cpu = sum(cpu for _, _, cpu in shares)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - cpu0
        up = cpu_seconds([upstream_pid]) - up0
        me = time.process_time() - me0 + helpers_cpu
        writes = commits = None
        if path.metrics:
            await asyncio.sleep(settle)  # the last final writes land before counting
            writes = await metric(session, path, WRITES) - writes0
            commits = await metric(session, path, COMMITS) - commits0
    return Run(streams, wall, cpu, up, me, peak_rss_mb(path.pids()), timed_out, writes, commits)
