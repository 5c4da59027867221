"""What the OpenAI gateway adds: time to first token and server CPU per relayed chunk.

Three processes, so each one's CPU is its own: the fake upstream
(`tests.fakes.upstream`), a streamkeep server (uvicorn, SQLite in a temporary
directory, storing every call) and this load generator. Side by side, in one run:

- time to first token of one stream at a time: straight to the fake upstream, through
  `POST /v1/chat/completions`, and through the chat API (`POST /api/chats/{id}/messages`);
  the gateway's added TTFT is its p50 minus the direct p50;
- 200 concurrent paced streams (tokens arrive every `--delay` seconds): the server's
  CPU seconds (from /proc) per relayed chunk, for the gateway and for the chat API.

    .venv/bin/python benchmarks/gateway.py [--rounds 200] [--streams 200] [--tokens 50]

Goals (the issue's): added TTFT under 2 ms at p50 for one stream, and at 200 paced
streams no more than 1.5x the chat API's CPU per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fake/fake-model"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True
    )


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = spawn([sys.executable, "-m", "tests.fakes.upstream", "--port", "0"])
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_server(upstream_url: str, data_dir: str, port: int, store: bool) -> subprocess.Popen[str]:
    config = Path(data_dir) / "streamkeep.toml"
    config.write_text(
        f'enable_local_model = false\nmodel = "{MODEL}"\n'
        f"gateway_store = {str(store).lower()}\n"
        f'[providers.fake]\nkind = "openai"\nbase_url = "{upstream_url}"\n'
        'api_key = "x"\nmodels = ["fake-model"]\n'
    )
    env = {"STREAMKEEP_CONFIG": str(config), "STREAMKEEP_DATA_DIR": data_dir}
    return spawn(
        [
            sys.executable,
            "-m",
            "streamkeep",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env,
    )


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


# -- one stream -------------------------------------------------------------------------

FIRST_CONTENT = b'"content":"'  # OpenAI chunks; the role chunk's content is "" (skipped)
FIRST_TEXT = b'"text-delta"'  # the chat API's UI stream


def _first_token(buffer: bytes, marker: bytes) -> bool:
    start = 0
    while (i := buffer.find(marker, start)) != -1:
        after = buffer[i + len(marker) : i + len(marker) + 1]
        if marker == FIRST_TEXT or (after and after != b'"'):
            return True
        start = i + 1
    return False


async def timed_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], marker: bytes
) -> tuple[float, int]:
    """(seconds to the first token, chunks received) for one streamed request."""
    started = time.perf_counter()
    first: float | None = None
    seen = b""
    frames = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for data in response.aiter_raw():
            if first is None:
                seen += data
                if _first_token(seen, marker):
                    first = time.perf_counter() - started
            frames += data.count(b"\n\n")
    assert first is not None, f"no token from {url}"
    return first, frames


def openai_body(model: str, directive: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"hi {directive}"}],
        "stream": True,
    }


async def ttft(rounds: int, upstream_url: str, server_url: str) -> dict[str, list[float]]:
    directive = "[[tokens=5]]"
    out: dict[str, list[float]] = {"direct": [], "gateway": [], "chat API": []}
    async with httpx.AsyncClient(timeout=30) as client:
        # A new chat per round, as a gateway call is (one chat's history would grow by
        # two messages a round and time the history's read instead).
        chat_ids = [
            (await client.post(f"{server_url}/api/chats", json={"model": MODEL})).json()["id"]
            for _ in range(rounds + 10)
        ]
        chat_iter = iter(chat_ids)
        targets: list[tuple[str, Callable[[], Any]]] = [
            (
                "direct",
                lambda: timed_stream(
                    client,
                    f"{upstream_url}/chat/completions",
                    openai_body("fake-model", directive),
                    FIRST_CONTENT,
                ),
            ),
            (
                "gateway",
                lambda: timed_stream(
                    client,
                    f"{server_url}/v1/chat/completions",
                    openai_body(MODEL, directive),
                    FIRST_CONTENT,
                ),
            ),
            (
                "chat API",
                lambda: timed_stream(
                    client,
                    f"{server_url}/api/chats/{next(chat_iter)}/messages",
                    {"content": f"hi {directive}"},
                    FIRST_TEXT,
                ),
            ),
        ]
        for i in range(rounds + 10):  # interleaved, so drift hits all alike; 10 warm-up
            for name, run in targets:
                seconds, _ = await run()
                if i >= 10:
                    out[name].append(seconds)
    return out


# -- many paced streams -----------------------------------------------------------------


async def paced(
    name: str,
    streams: int,
    tokens: int,
    delay: float,
    upstream_url: str,
    server_url: str,
    server_pid: int,
) -> tuple[float, int, float]:
    """(server CPU seconds, chunks relayed, wall seconds) for `streams` at once."""
    directive = f"[[tokens={tokens} delay={delay}]]"
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        if name == "chat API":
            chats = [
                (await client.post(f"{server_url}/api/chats", json={"model": MODEL})).json()["id"]
                for _ in range(streams)
            ]
            runs = [
                timed_stream(
                    client,
                    f"{server_url}/api/chats/{c}/messages",
                    {"content": f"go {directive}"},
                    FIRST_TEXT,
                )
                for c in chats
            ]
        else:
            runs = [
                timed_stream(
                    client,
                    f"{server_url}/v1/chat/completions",
                    openai_body(MODEL, directive),
                    FIRST_CONTENT,
                )
                for _ in range(streams)
            ]
        cpu0, wall0 = cpu_seconds(server_pid), time.perf_counter()
        results = await asyncio.gather(*runs)
        cpu1, wall1 = cpu_seconds(server_pid), time.perf_counter()
    # Count the provider's content chunks, the unit both paths relay.
    return cpu1 - cpu0, streams * tokens, wall1 - wall0 if results else 0.0


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--no-store", action="store_true", help="gateway_store off: the gateway only relays"
    )
    args = parser.parse_args()

    upstream, upstream_url = start_upstream()
    data_dir = tempfile.mkdtemp(prefix="streamkeep-bench-")
    server = start_server(upstream_url, data_dir, args.port, not args.no_store)
    server_url = f"http://127.0.0.1:{args.port}"
    try:
        await wait_ready(server_url)
        times = await ttft(args.rounds, upstream_url, server_url)
        print(f"time to first token, 1 stream at a time ({args.rounds} rounds):")
        base = statistics.median(times["direct"])
        for name, values in times.items():
            p50 = statistics.median(values)
            added = "" if name == "direct" else f"   added p50 {(p50 - base) * 1e3:6.2f} ms"
            print(f"  {name:9s} p50 {p50 * 1e3:6.2f} ms  p90 {p(values, 90) * 1e3:6.2f} ms{added}")
        print(f"{args.streams} concurrent streams, {args.tokens} tokens every {args.delay}s:")
        per_chunk: dict[str, float] = {}
        for name in ("chat API", "gateway"):
            cpu, chunks, wall = await paced(
                name, args.streams, args.tokens, args.delay, upstream_url, server_url, server.pid
            )
            per_chunk[name] = cpu / chunks
            print(
                f"  {name:9s} server CPU {cpu:6.2f} s for {chunks} chunks in {wall:5.1f} s: "
                f"{per_chunk[name] * 1e6:6.1f} us/chunk"
            )
        ratio = per_chunk["gateway"] / per_chunk["chat API"]
        print(f"  gateway / chat API CPU per chunk: {ratio:.2f}x")
    finally:
        for proc in (server, upstream):
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
