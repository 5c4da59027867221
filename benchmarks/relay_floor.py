"""Benchmark: the floors under any Python relay of paced streams on this machine.

Two relays between `chat_server.py`'s client and fake provider, under the same load,
each in its own process; printed: the relay's CPU per relayed chunk.

- `tcp`: a transparent TCP proxy (uvloop; one `data_received` -> `write` per read, no
  HTTP parsing): what the interpreter and the two loopback syscalls alone cost.
- `http`: the same frameworks as `streamkeep serve`, doing nothing else: uvicorn
  (httptools, uvloop) runs a bare ASGI app that posts the request upstream with aiohttp
  and sends each body read on as it comes (no SSE parsing, no encoding, no storing,
  no FastAPI routing).

`chat_server.py`'s server figure sits on top of these (parsing the provider's stream,
encoding and numbering frames, storing, routing, one task per generation).

    .venv/bin/python benchmarks/relay_floor.py --streams 200 --tokens 100 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp

from chat_server import (
    cpu_times,
    direct_stream,
    directive,
    free_port,
    print_table,
    process,
    quantiles,
    wait_ready,
)


class _Pipe(asyncio.Protocol):
    """One direction's sink: writes what the other side's protocol hands it."""

    def __init__(self) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: typed by what is used.
        self.transport: asyncio.WriteTransport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:  # the upstream connection is not up yet
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()


def serve_http(port: int, upstream_port: int) -> None:
    """Run the uvicorn + aiohttp relay until killed (the child process's body)."""
    import uvicorn

    upstream = f"http://127.0.0.1:{upstream_port}"
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] != "http":
            return
        if session is None:
            session = aiohttp.ClientSession(
                upstream,
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        async with session.request(scope["method"], scope["path"], data=body) as r:
            headers = [(b"content-type", r.headers.get("content-type", "").encode())]
            await send({"type": "http.response.start", "status": r.status, "headers": headers})
            async for data in r.content.iter_any():
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def serve(port: int, upstream_port: int) -> None:
    """Run the proxy until killed (the child process's body)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()

        class Client(_Pipe):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                self.connecting = loop.create_task(self._connect())  # held: weak refs

            async def _connect(self) -> None:
                _, upstream = await loop.create_connection(_Pipe, "127.0.0.1", upstream_port)
                upstream.peer, self.peer = self, upstream
                assert upstream.transport is not None
                for data in self.pending:
                    upstream.transport.write(data)
                self.pending.clear()

        server = await loop.create_server(Client, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


async def run(args: argparse.Namespace) -> None:
    up_port, port = free_port(), free_port()
    content = directive(args.tokens, args.rate)
    upstream_cmd = [sys.executable, "-m", "tests.fakes.upstream", "--port", str(up_port)]
    proxy_cmd = [sys.executable, __file__, f"--serve-{args.relay}", str(port), str(up_port)]
    with process(upstream_cmd) as upstream, process(proxy_cmd) as proxy:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        ) as client:
            await wait_ready(client, f"http://127.0.0.1:{up_port}/v1/models")
            await wait_ready(client, f"http://127.0.0.1:{port}/v1/models")
            n = args.streams
            delays = [args.ramp * i / n for i in range(n)]
            up_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            direct = await asyncio.gather(
                *(direct_stream(client, up_url, content, d) for d in delays)
            )
            cpu0, t0 = sum(cpu_times(proxy.pid)), time.perf_counter()
            others0 = sum(cpu_times(upstream.pid)) + time.process_time()
            relayed = await asyncio.gather(
                *(direct_stream(client, url, content, d) for d in delays)
            )
            wall = time.perf_counter() - t0
            cpu = sum(cpu_times(proxy.pid)) - cpu0
            others = sum(cpu_times(upstream.pid)) + time.process_time() - others0
    chunks = sum(r.chunks for r in relayed)
    up50, _ = quantiles([r.ttft for r in direct])
    px50, _ = quantiles([r.ttft for r in relayed])
    rows = [
        ("relay", args.relay),
        ("streams", f"{n}"),
        ("tokens per stream / rate", f"{args.tokens} at {args.rate:g}/s"),
        ("chunks relayed / expected", f"{chunks} / {n * args.tokens}"),
        ("added TTFT p50 (ms)", f"{(px50 - up50) * 1e3:.2f}"),
        ("wall time (s)", f"{wall:.2f}"),
        ("relay CPU (s)", f"{cpu:.2f}"),
        ("fake upstream + this client CPU (s)", f"{others:.2f}"),
        ("relay CPU per relayed chunk (us)", f"{cpu / max(chunks, 1) * 1e6:.1f}"),
    ]
    print_table(rows)


def main() -> None:
    if sys.argv[1:2] in (["--serve-tcp"], ["--serve-http"]):
        relay = serve if sys.argv[1] == "--serve-tcp" else serve_http
        relay(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", choices=["tcp", "http"], default="tcp")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100, help="chunks per stream")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which streams start")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
