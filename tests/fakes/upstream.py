"""A scripted fake LLM provider over real HTTP on loopback.

It speaks OpenAI's Chat Completions (`POST /v1/chat/completions`, `GET /v1/models`) and
Anthropic's Messages (`POST /v1/messages`) wire formats, streaming or not, and can be
told to misbehave: slow tokens, HTTP errors with `Retry-After`, in-stream errors, a
dropped or reset connection, a body cut short, a hang before or during the body. A
streamed body is chunked, or (`framing`) sized by Content-Length, or ended by closing.

Why a raw `asyncio.start_server` HTTP/1.1 server rather than an ASGI app under uvicorn:
faults are about bytes and sockets (abort mid-chunk, hold a connection open without
writing, notice at once that the client went away), which a framework hides; and the
benchmarks run hundreds of paced streams against it, where one coroutine per connection
and pre-encoded chunks cost far less than a framework's per-request machinery.

Every chat request's history is first checked as the real API checks it (see
`upstream_validate`): one it would refuse is answered 400 in the vendor's error shape,
kept in `rejected`, and takes no script. `validate = False` turns this off.

How a request picks its behaviour, first match wins:
1. a `Script` queued with `enqueue()` (FIFO, one per accepted chat request);
2. a directive in the last user message, e.g. `[[tokens=50 delay=0.02 fail_after=10]]`
   or `[[text="Hi there" reasoning=3]]` (any scalar `Script` field, and `calls` as
   JSON), so a separate server process can be scripted from a browser; not when the
   request ends with tool results (the answer to those is not the user's to script);
3. `FakeUpstream.default` if set, else an echo: "Hello! You said: <user text>", or
   "Tool results: <each result's text, joined by ' | '>" after tool results. When the
   last user message has images the echo ends " [images: image/png:<12 hex>]", one
   `<media type>:<start of the SHA-256 of its bytes>` per image in that vendor's
   format (`url:<url>` for one by URL): see `upstream_wire.last_user_images`.

Tool calls (`tool`, `calls`) come after the text; `args_chunk` sizes their argument
deltas. Anthropic thinking (`reasoning`) ends with the signature "sig-<n>" and
`redacted` adds a redacted_thinking block "redacted-<n>" (n: the request's number,
counting every chat request); the fake keeps what it issued (`signatures`,
`redactions`) and refuses a history whose thinking blocks do not match.

Counting rules (exact, so tests can assert them):
- "chunks" are output pieces: reasoning words, text words, tool-argument pieces.
  `fail_after`, `error_after`, `hang_after`, `cut_after` and `reset_after` count them all.
- prompt tokens = whitespace-separated words in every request message (and `system`);
  completion tokens = output chunks sent (reasoning tokens are reported separately
  too, as OpenAI does: they are included in the completion count).
- With `tool` or `calls` set, `tokens` is ignored and text is sent only if `text` is
  given. A redacted_thinking block is one chunk.
- `delay` is between output chunks (not before the first). A fault "after 0 chunks"
  comes right after the headers, before any body byte.
- Anthropic streams always carry usage; OpenAI ones only with `stream_options`.
- Non-streaming requests: `fail_after` drops the connection, `hang_after` hangs,
  `error_after` is ignored; `status` and `hang_before_first_byte` apply as usual.

Counters for tests: `open_streams`, `closed_by_client`, `connections` (TCP accepts),
`models_headers` (one per `GET /models`), and `await wait_idle()` (wrap it in
`asyncio.timeout`) for "the upstream was closed".

`GET /models` lists `models` in OpenAI's shape, unless `models_answer` (a `Script`)
says otherwise: its `status` answers that error, `hang_before_first_byte` holds the
answer back, `raw` is sent as the body instead.

Run standalone: `python -m tests.fakes.upstream --port 8123` prints the base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl as ssl_module
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import orjson
import pytest_asyncio

from tests.fakes import upstream_validate as validate
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream_wire import Script, parse_directive

__all__ = ["FakeUpstream", "Rejection", "Script", "fake_upstream", "parse_directive"]


class Rejection(NamedTuple):
    """A chat request refused for its history: the body and the error message."""

    body: Any
    message: str


class _ClientGone(Exception):
    """The client closed the connection while we were answering."""


class _Request:
    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


class FakeUpstream:
    """The fake provider; `async with FakeUpstream() as up:` starts and stops it."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl  # serve HTTPS with this context (tests of the TLS path)
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.open_streams = 0
        self.closed_by_client = 0
        self.connections = 0  # TCP connections accepted (shows keep-alive reuse)
        self.default: Script | None = None
        self.models: list[str] = [wire.MODEL]
        self.models_answer: Script | None = None
        self.models_headers: list[dict[str, str]] = []  # of each `GET /models`
        # Check each history as the real API does; False for tests of odd bodies.
        self.validate = True
        self.rejected: list[Rejection] = []  # the requests answered 400 for their history
        self.signatures: dict[str, str] = {}  # thinking signature issued -> text it signs
        self.redactions: set[str] = set()  # redacted_thinking data issued
        self._queue: deque[Script] = deque()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def _scheme(self) -> str:
        return "https" if self.ssl is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The URL an Anthropic client takes as its base (it appends /v1/messages)."""
        return f"{self._scheme}://{self.host}:{self.port}"

    def enqueue(self, script: Script) -> None:
        self._queue.append(script)

    async def start(self) -> None:
        # A deep accept queue: asyncio's default (100) drops the SYNs of a burst of 500
        # connections, and each dropped one waits a second for its retry (the benchmark's
        # 500 streams, through any path, direct included).
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, ssl=self.ssl, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_idle(self) -> None:
        """Wait until no response is being streamed (the client's close reached us).

        Wrap it in `asyncio.timeout(...)`: a leak then fails the test instead of hanging.
        """
        await self._idle.wait()

    # -- connections -------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Run in a task of our own: on Python 3.11, cancelling the task asyncio made for
        # this callback (as `stop()` must) logs a spurious error.
        task = asyncio.create_task(self._converse(reader, writer))
        self._conns.add(task)
        self.connections += 1
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        carry = bytearray()  # bytes the close watch read: the start of the next request
        try:
            while (request := await _read_request(reader, carry)) is not None:
                if not await self._serve_one(request, reader, writer, carry):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()  # flushes what was written, then FIN: an "abrupt" end of body

    async def _serve_one(
        self,
        request: _Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        carry: bytearray,
    ) -> bool:
        """Answer one request; False when the connection must not be reused. A byte the
        close watch reads is the next request's first (pipelined, or sent as this answer
        ended): it goes into `carry`, not lost."""
        if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
            self.models_headers.append(request.headers)
            await self._answer_models(writer)
            return True
        if request.method != "POST" or not request.path.endswith(
            ("/chat/completions", "/messages")
        ):
            await _send_json(writer, 404, wire.openai_error(404, f"no route {request.path}"))
            return True
        body = orjson.loads(request.body or b"{}")
        self.requests.append(body)
        self.request_headers.append(request.headers)
        anthropic = request.path.endswith("/messages")
        if self.validate and (invalid := self._invalid(body, anthropic)) is not None:
            self.rejected.append(Rejection(body, invalid))
            error = wire.anthropic_error if anthropic else wire.openai_error
            await _send_json(writer, 400, error(400, invalid))
            return True
        try:
            script = self._pick_script(body)
        except ValueError as exc:  # a malformed [[directive]]
            await _send_json(writer, 400, wire.openai_error(400, str(exc)))
            return True
        plan = wire.Plan.build(script, body, anthropic, len(self.requests))
        if plan.reasoning and anthropic:
            self.signatures[plan.signature] = plan.thinking
        if plan.redaction is not None:
            self.redactions.add(plan.redaction)
        # Race the answer against the client going away, so a hang notices a close.
        answer = asyncio.create_task(self._answer(plan, writer))
        watch = asyncio.create_task(reader.read(1))
        self._track(plan.streaming)
        try:
            await asyncio.wait({answer, watch}, return_when=asyncio.FIRST_COMPLETED)
            ended = watch.done() and not watch.cancelled() and watch.exception() is None
            if ended and (early := watch.result()):  # data, not a close: the next request
                carry += early
                await asyncio.wait({answer})
            if not answer.done():
                answer.cancel()
                self.closed_by_client += plan.streaming
                return False
            watch.cancel()
            return answer.result()
        except _ClientGone:
            self.closed_by_client += plan.streaming
            return False
        finally:
            self._track(-plan.streaming)
            for task in (answer, watch):
                task.cancel()
            await asyncio.gather(answer, watch, return_exceptions=True)

    def _invalid(self, body: Any, anthropic: bool) -> str | None:
        """Why the real API would refuse this body's history; None if it would not."""
        if anthropic:
            return validate.anthropic_history(body, self.signatures, self.redactions)
        return validate.openai_history(body)

    def _track(self, change: int) -> None:
        self.open_streams += change
        if self.open_streams:
            self._idle.clear()
        else:
            self._idle.set()

    def _pick_script(self, body: dict[str, Any]) -> Script | None:
        if self._queue:
            return self._queue.popleft()
        # The user's directive scripts the answer to the user, not the one to the tool
        # results that follow (else `[[tool=...]]` would call the tool forever).
        if wire.tool_results(body) is None:
            directive = parse_directive(wire.last_user_text(body))
            if directive is not None:
                return directive
        return self.default

    async def _answer(self, plan: wire.Plan, writer: asyncio.StreamWriter) -> bool:
        script = plan.script
        if script.hang_before_first_byte:
            await asyncio.sleep(script.hang_before_first_byte)
        if script.status is not None:
            headers = {}
            if script.retry_after is not None:
                headers["retry-after"] = f"{script.retry_after:g}"
            await _send_json(writer, script.status, plan.error_body(), headers)
            return True
        if not plan.streaming:
            return await self._answer_whole(plan, writer)
        framing = script.framing
        chunked = framing == "chunked"
        length = await plan.content_length() if framing == "length" else None
        await _write(writer, _head(200, "text/event-stream", chunked=chunked, length=length))
        async for piece in plan.stream_pieces():
            if piece is wire.DROP:
                return False
            if piece is wire.RESET:
                await _reset(writer)
                return False
            if piece is wire.HANG:
                await asyncio.Event().wait()
            if piece is wire.END:
                break
            assert isinstance(piece, bytes)
            await _write(writer, b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            await _write(writer, b"0\r\n\r\n")
        # A body without a length ends when the connection closes.
        return framing != "close"

    async def _answer_models(self, writer: asyncio.StreamWriter) -> None:
        script = self.models_answer
        if script is None:
            await _send_json(writer, 200, wire.models_body(self.models))
            return
        if script.hang_before_first_byte:
            await asyncio.sleep(script.hang_before_first_byte)
        if script.status is not None and script.raw is not None:  # an error body of one's own
            body = b"".join(p for p in script.raw if isinstance(p, bytes))
            await _write(writer, _head(script.status, "application/json", length=len(body)) + body)
        elif script.status is not None:
            message = f"fake upstream error {script.status}"
            await _send_json(writer, script.status, wire.openai_error(script.status, message))
        elif script.raw is not None:
            body = b"".join(p for p in script.raw if isinstance(p, bytes))
            await _write(writer, _head(200, "application/json", length=len(body)) + body)
        else:
            await _send_json(writer, 200, wire.models_body(self.models))

    async def _answer_whole(self, plan: wire.Plan, writer: asyncio.StreamWriter) -> bool:
        script = plan.script
        if script.fail_after is not None:
            return False
        if script.hang_after is not None:
            await asyncio.Event().wait()
        await _send_json(writer, 200, plan.whole_body())
        return True


async def _read_request(reader: asyncio.StreamReader, carry: bytearray) -> _Request | None:
    try:
        head = bytes(carry) + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    carry.clear()
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return _Request(method, path, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(
    status: int,
    content_type: str,
    *,
    chunked: bool = False,
    length: int | None = 0,
    extra: dict[str, str] | None = None,
) -> bytes:
    """`length` None (and not chunked): the body ends when the connection closes."""
    lines = [
        f"HTTP/1.1 {status} {wire.REASONS.get(status, 'Status')}",
        f"content-type: {content_type}",
    ]
    if chunked:
        lines += ["transfer-encoding: chunked", "cache-control: no-cache"]
    elif length is None:
        lines.append("connection: close")
    else:
        lines.append(f"content-length: {length}")
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    data = orjson.dumps(body)
    await _write(writer, _head(status, "application/json", length=len(data), extra=headers) + data)


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Reset the connection (RST, not FIN) once what was written has left."""
    writer.transport.set_write_buffer_limits(0)  # so drain() waits for an empty buffer
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.transport.is_closing():
        raise _ClientGone
    writer.write(data)
    try:
        await writer.drain()
    except ConnectionError as exc:
        raise _ClientGone from exc


@pytest_asyncio.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started fake provider, stopped after the test."""
    async with FakeUpstream() as up:
        yield up


async def _serve_forever(host: str, port: int) -> None:
    async with FakeUpstream(host, port) as up:
        print(up.base_url, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # uvloop when standalone (the benchmarks): the fake's own CPU shares the machine
    # with the server being measured.
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=_loop()) as runner:
        runner.run(_serve_forever(args.host, args.port))


def _loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
