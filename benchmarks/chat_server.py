"""Benchmark: many concurrent chat streams through `streamkeep serve`.

The fake upstream and the server run as separate processes (so the server's CPU can be
read from /proc alone); this process is the client. Two phases with the same load:

1. direct: N streams straight to the fake upstream, for its own time to first token;
2. served: N chats, each posting one message through the server (SQLite by default).

Printed: streams, text chunks delivered vs expected, added TTFT over the upstream's own
(p50/p95), chunks per second, server CPU microseconds per relayed chunk, and database
statements / transactions per message (from the server's /metrics counters).

    .venv/bin/python benchmarks/chat_server.py --streams 200 --tokens 100 --rate 50

Goals: every chunk delivered, added TTFT < 5 ms p50, < 60 us server CPU per relayed
chunk, <= 1 write per message plus one batched checkpoint transaction per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class StreamResult:
    ttft: float  # seconds from sending the request to the first text chunk
    chunks: int  # text chunks received
    events: int  # all SSE events received


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def process(
    cmd: list[str], env: dict[str, str] | None = None, stop: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield proc
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(client: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with client.get(url) as r:
                if r.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def directive(tokens: int, rate: float) -> str:
    return f"[[tokens={tokens} delay={1 / rate:g}]] benchmark"


async def direct_stream(
    client: aiohttp.ClientSession, url: str, content: str, delay: float = 0.0
) -> StreamResult:
    await asyncio.sleep(delay)
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    start = time.perf_counter()
    ttft, chunks = 0.0, 0
    async with client.post(url, json=body) as r:
        async for data in r.content.iter_any():
            n = data.count(b'"delta":{"content":')
            if n and not chunks:
                ttft = time.perf_counter() - start
            chunks += n
    return StreamResult(ttft, chunks, chunks)


async def served_stream(
    client: aiohttp.ClientSession,
    chat_id: str,
    content: str,
    delay: float = 0.0,
    watchers: int = 0,
) -> StreamResult:
    await asyncio.sleep(delay)
    start = time.perf_counter()
    ttft, chunks, events = 0.0, 0, 0
    async with client.post(f"/api/chats/{chat_id}/messages", json={"content": content}) as r:
        r.raise_for_status()
        # Extra subscribers of the same generation (e.g. other tabs) via resume.
        extra = [asyncio.create_task(watch(client, chat_id)) for _ in range(watchers)]
        async for data in r.content.iter_any():
            n = data.count(b'"type":"text-delta"')
            if n and not chunks:
                ttft = time.perf_counter() - start
            chunks += n
            events += data.count(b"\n\n")
    for n in await asyncio.gather(*extra):
        events += n
    return StreamResult(ttft, chunks, events)


async def watch(client: aiohttp.ClientSession, chat_id: str) -> int:
    """Follow a chat's generation from its first event; the number of events read."""
    events = 0
    async with client.get(f"/api/chats/{chat_id}/stream?after=0") as r:
        async for data in r.content.iter_any():
            events += data.count(b"\n\n")
    return events


def start_spy(out: str | None, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) sampling the server during the served phase only: the
    on-CPU Python stacks, in py-spy's raw (collapsed) format, written to `out`."""
    if out is None:
        return None
    cmd = ["py-spy", "record", "--pid", str(pid), "--gil", "--nonblocking"]
    cmd += ["--rate", "400", "--format", "raw", "--output", out]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches before the load starts
    return spy


async def new_chat(client: aiohttp.ClientSession) -> str:
    async with client.post("/api/chats", json={}) as r:
        chat_id: str = (await r.json())["id"]
        return chat_id


async def get_text(client: aiohttp.ClientSession, path: str) -> str:
    async with client.get(path) as r:
        return await r.text()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]


async def run(args: argparse.Namespace) -> None:
    up_port, port = free_port(), free_port()
    content = directive(args.tokens, args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKEEP_")}
        env |= {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
            "OPENAI_API_KEY": "x",
            "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
            "STREAMKEEP_MODEL": "openai/fake-model",
            "STREAMKEEP_CONFIG": str(Path(tmp) / "absent.toml"),
        }
        if args.database_url:
            env["STREAMKEEP_DATABASE_URL"] = args.database_url
        upstream_cmd = [sys.executable, "-m", "tests.fakes.upstream", "--port", str(up_port)]
        server_cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
        if args.profile:  # cProfile writes its file when SIGINT ends the server
            server_cmd[1:1] = ["-m", "cProfile", "-o", args.profile]
        if args.wrap:  # e.g. "py-spy record -o flame.svg --": a profiler around the server
            server_cmd[:0] = shlex.split(args.wrap)
        server_cmd += ["--data-dir", tmp, "--log-level", "warning"]
        stop = signal.SIGINT if args.profile or args.wrap else signal.SIGTERM
        with process(upstream_cmd) as upstream, process(server_cmd, env, stop) as server:
            # aiohttp (C parser) keeps this client's CPU low: it shares the 2 cores
            # with the server being measured.
            async with aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}",
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
            ) as client:
                await wait_ready(client, "/readyz")
                await wait_ready(client, f"http://127.0.0.1:{up_port}/v1/models")
                await report(args, client, server.pid, up_port, content, upstream.pid)


async def report(
    args: argparse.Namespace,
    client: aiohttp.ClientSession,
    pid: int,
    up_port: int,
    content: str,
    upstream_pid: int,
) -> None:
    n = args.streams
    up_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
    # Arrivals spread evenly over `ramp` seconds (0: all at once).
    delays = [args.ramp * i / n for i in range(n)]
    direct = await asyncio.gather(*(direct_stream(client, up_url, content, d) for d in delays))
    chats = [await new_chat(client) for _ in range(n)]

    before = await get_text(client, "/metrics")
    spy = start_spy(args.spy, pid)
    (user0, sys0), t0 = cpu_times(pid), time.perf_counter()
    others0 = sum(cpu_times(upstream_pid)) + time.process_time()
    served = await asyncio.gather(
        *(
            served_stream(client, c, content, d, args.watchers)
            for c, d in zip(chats, delays, strict=True)
        )
    )
    wall, (user1, sys1) = time.perf_counter() - t0, cpu_times(pid)
    user, system = user1 - user0, sys1 - sys0
    others = sum(cpu_times(upstream_pid)) + time.process_time() - others0
    cpu = user + system
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    await asyncio.sleep(args.settle)  # let the last final writes land before counting
    after = await get_text(client, "/metrics")

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    relayed = delta("streamkeep_relayed_chunks_total")
    writes = delta('streamkeep_db_statements_total{kind="write"}')
    commits = delta("streamkeep_db_commits_total")
    up50, up95 = quantiles([r.ttft for r in direct])
    sv50, sv95 = quantiles([r.ttft for r in served])
    delivered = sum(r.chunks for r in served)
    rows = [
        ("streams", f"{n}"),
        ("tokens per stream / rate", f"{args.tokens} at {args.rate:g}/s"),
        ("arrivals spread over (s)", f"{args.ramp:g}"),
        ("text chunks delivered / expected", f"{delivered} / {n * args.tokens}"),
        ("upstream TTFT p50 / p95 (ms)", f"{up50 * 1e3:.2f} / {up95 * 1e3:.2f}"),
        ("served TTFT p50 / p95 (ms)", f"{sv50 * 1e3:.2f} / {sv95 * 1e3:.2f}"),
        ("added TTFT p50 / p95 (ms)", f"{(sv50 - up50) * 1e3:.2f} / {(sv95 - up95) * 1e3:.2f}"),
        ("SSE events relayed (server count)", f"{relayed:.0f}"),
        ("events per second", f"{sum(r.events for r in served) / wall:.0f}"),
        ("wall time (s)", f"{wall:.2f}"),
        ("server CPU (s): user + system", f"{cpu:.2f}: {user:.2f} + {system:.2f}"),
        ("fake upstream + this client CPU (s)", f"{others:.2f}"),
        ("server CPU per relayed event (us)", f"{cpu / max(relayed, 1) * 1e6:.1f}"),
        ("DB write statements per message", f"{writes / n:.2f}"),
        ("DB transactions per message", f"{commits / n:.2f}"),
        ("DB transactions per second", f"{commits / wall:.2f}"),
    ]
    print_table(rows)


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100, help="text chunks per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument(
        "--ramp", type=float, default=2.0, help="seconds over which the streams start"
    )
    parser.add_argument("--profile", help="run the server under cProfile, stats to this file")
    parser.add_argument("--wrap", help="a command prefix for the server, e.g. a profiler")
    parser.add_argument(
        "--spy", help="sample the served phase with py-spy (raw stacks to this file)"
    )
    parser.add_argument(
        "--watchers", type=int, default=0, help="extra resume subscribers per stream"
    )
    parser.add_argument("--settle", type=float, default=0.5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
