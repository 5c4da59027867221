"""Relaying a generation's stream to one HTTP client.

The generation already holds every frame pre-encoded (`id: n` + `data: {...}`); the
relay only writes the bytes it is handed, a wake-up's worth at a time. A client that
goes away ends its own subscription, never the generation (unless the app is set to
`stop_on_disconnect`, which the generation itself handles).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import Request
from starlette.types import Receive, Scope, Send

from streamkeep.generation import Generation
from streamkeep.generation.peers import GenerationView
from streamkeep.generation.ui_stream import HEADERS
from streamkeep.server.errors import ApiError
from streamkeep.server.metrics import Metrics
from streamkeep.server.sse import SSEResponse

# Where the first token shows in a frame batch: every text or reasoning delta chunk.
_DELTA = b'-delta"'


def resume_point(request: Request) -> int:
    """The sequence number a client has seen: `Last-Event-ID`, else `?after=`, else 0."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return 0
    try:
        after = int(raw)
    except ValueError:
        raise ApiError(422, "invalid_request", f"bad event id {raw!r}: want an integer") from None
    if after < 0:
        raise ApiError(422, "invalid_request", "the event id must not be negative")
    return after


def stream_response(
    generation: Generation,
    metrics: Metrics,
    *,
    after: int = 0,
    started_at: float | None = None,
) -> SSEResponse:
    """The SSE response for `generation` from `after` on.

    `started_at` (a `perf_counter` reading) is given by the request that started the
    generation: its first delta then feeds the time-to-first-token histogram.
    """
    headers = {
        **HEADERS,
        "x-streamkeep-chat-id": generation.chat_id,
        "x-streamkeep-message-id": generation.message_id,
    }
    return _GenerationResponse(generation.subscribe(after), headers, metrics, started_at)


class _GenerationResponse(SSEResponse):
    """Counts what it relays; the first delta of a new generation times its TTFT."""

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: dict[str, str],
        metrics: Metrics,
        started_at: float | None,
    ) -> None:
        super().__init__(frames, headers=headers)
        self._metrics = metrics
        self._started_at = started_at
        self._relayed = 0  # counted here and added once: a metric's lock per write adds up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.active_streams.inc()  # `ended` takes it back
        await super().__call__(scope, receive, send)

    def sent(self, chunk: bytes) -> None:
        if self._started_at is not None and _DELTA in chunk:
            self._metrics.ttft.observe(time.perf_counter() - self._started_at)
            self._started_at = None
        self._relayed += chunk.count(b"\n\n")

    def ended(self) -> None:
        self._metrics.active_streams.dec()
        self._metrics.relayed_chunks.inc(self._relayed)


def remote_stream_response(generation: GenerationView, *, after: int) -> SSEResponse:
    """The SSE response for a generation another worker runs, from `after` on."""
    headers = {
        **HEADERS,
        "x-streamkeep-chat-id": generation.chat_id,
        "x-streamkeep-message-id": generation.message_id,
    }
    return SSEResponse(generation.subscribe(after), headers=headers)
