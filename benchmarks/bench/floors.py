"""The floors under any Python relay of paced streams: two relays doing nothing else,
each run as its own process by the `relay-tcp` and `relay-http` paths.

- `tcp`: a transparent TCP proxy (uvloop; one `data_received` -> `write` per read, no
  HTTP parsing): what the interpreter and the two loopback syscalls alone cost.
- `http`: the same frameworks as `streamkeep serve`, doing nothing else: uvicorn
  (httptools, uvloop) runs a bare ASGI app that posts the request upstream with aiohttp
  and sends each body read on as it comes (no SSE parsing, no encoding, no storing,
  no FastAPI routing).

    python benchmarks/bench/floors.py tcp|http PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp


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

        server = await loop.create_server(Client, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(main())


if __name__ == "__main__":
    relay = serve if sys.argv[1] == "tcp" else serve_http
    relay(int(sys.argv[2]), int(sys.argv[3]))
