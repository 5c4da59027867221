"""`SSEResponse`: an ASGI response that writes pre-encoded SSE frames as they come.

Starlette's `StreamingResponse` (and FastAPI's `EventSourceResponse`, which is one)
watches for the client leaving through an anyio task group around every stream; here
one plain task waits on `receive()` and cancels the relay when the client is gone, and
the relay itself is a bare loop of `send`s. It also keeps a quiet stream alive: when no
frame went out for `PING_INTERVAL` seconds (a model thinking before its first token, a
slow tool), it sends an SSE comment, which every SSE parser skips, so proxies with an
idle timeout (nginx: 60 s) do not cut the stream.

The frames are an async generator, closed when the response ends, whichever way it
ends. `RelayResponse` is one that counts itself on the app's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from streamkeep.http.metrics import Metrics
from streamkeep.sse import PING

# The scope key under which the app may leave the ASGI server's own `send`: then the
# body goes straight to it, past the middleware (see `server.app.App`).
RAW_SEND = "streamkeep.raw_send"
# Seconds without a frame before a keep-alive comment goes out.
PING_INTERVAL = 15.0
# Where the first token shows in a UI message stream's frames: every text or reasoning
# delta chunk.
_DELTA = b'-delta"'


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        self.frames = frames
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    def sent(self, chunk: bytes) -> None:
        """Called after each chunk went out; for subclasses (it is on the per-token path)."""

    def ended(self) -> None:
        """Called once the response is over, however it ended; for subclasses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        keeper = _KeepAlive(send)
        watcher = asyncio.get_running_loop().create_task(_watch(receive, relay, keeper))
        frames = self.frames
        # The start goes through the middleware, the body where the app said it may.
        send_body: Send = scope.get(RAW_SEND, send)
        sent = self.sent
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            keeper.start()
            async for chunk in frames:
                keeper.quiet = False
                await send_body({"type": "http.response.body", "body": chunk, "more_body": True})
                sent(chunk)
            keeper.stop()
            await send_body({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # The client left (the watcher cancelled us): the end of this response, not
            # an error. Any other cancellation goes on up.
            if not keeper.gone or relay.uncancel() > 0:
                raise
        finally:
            keeper.stop()
            watcher.cancel()
            try:
                await frames.aclose()
            finally:
                self.ended()


class RelayResponse(SSEResponse):
    """An `SSEResponse` counted on the app's metrics: the clients streaming now, and the
    events sent to them (added once, when the response ends: a metric's lock per write
    adds up). Given `started_at` (a `perf_counter` reading of the request that started a
    generation), the first UI-stream delta it sends feeds the time-to-first-token
    histogram. Given `available` (how many frames its log holds for it so far), its
    backlog (those not written yet) is in the metrics while it streams, read when they
    are scraped."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        headers: Mapping[str, str],
        metrics: Metrics,
        started_at: float | None = None,
        available: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(frames, headers=headers)
        self._metrics = metrics
        self._started_at = started_at
        self._available = available
        self._relayed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.active_streams.inc()  # `ended` takes it back
        if self._available is not None:
            self._metrics.stream_started(self)
        await super().__call__(scope, receive, send)

    def backlog(self) -> int:
        """Frames its log holds for it that it has not written yet."""
        if self._available is None:
            return 0
        return max(0, self._available() - self._relayed)

    def sent(self, chunk: bytes) -> None:
        if self._started_at is not None and _DELTA in chunk:
            self._metrics.ttft.observe(time.perf_counter() - self._started_at)
            self._started_at = None
        self._relayed += chunk.count(b"\n\n")

    def ended(self) -> None:
        self._metrics.stream_ended(self)
        self._metrics.active_streams.dec()
        self._metrics.relayed_chunks.inc(self._relayed)


class _KeepAlive:
    """Sends `PING` from a timer when no frame went out in the last interval."""

    __slots__ = ("_handle", "_ping_task", "_send", "gone", "quiet")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._handle: asyncio.TimerHandle | None = None
        self._ping_task: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        self.quiet = True  # no frame since the last tick
        self.gone = False  # the client disconnected

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(PING_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        if self.quiet and not self.gone and (self._ping_task is None or self._ping_task.done()):
            self._ping_task = asyncio.get_running_loop().create_task(self._ping())
        self.quiet = True
        self.start()

    async def _ping(self) -> None:
        # A ping that loses the race with the final frame finds the response complete;
        # there is nothing to keep alive then.
        with contextlib.suppress(Exception):
            await self._send({"type": "http.response.body", "body": PING, "more_body": True})


async def _watch(receive: Receive, relay: asyncio.Task[object], keeper: _KeepAlive) -> None:
    """Wait for the client to leave, then end the relay."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            keeper.gone = True
            relay.cancel()
            return
