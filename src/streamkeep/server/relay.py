"""Relaying a generation's stream to one HTTP client.

The generation already holds every frame pre-encoded (`id: n` + `data: {...}`); the
relay only writes the bytes it is handed, a wake-up's worth at a time. A client that
goes away ends its own subscription, never the generation (unless the app is set to
`stop_on_disconnect`, which the generation itself handles).
"""

from __future__ import annotations

from fastapi import Request

from streamkeep.generation import Generation
from streamkeep.generation.peers import GenerationView
from streamkeep.generation.ui_stream import HEADERS
from streamkeep.http.metrics import Metrics
from streamkeep.http.responses import RelayResponse, SSEResponse
from streamkeep.server.errors import RequestRefused


def resume_point(request: Request) -> int:
    """The sequence number a client has seen: `Last-Event-ID`, else `?after=`, else 0."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return 0
    try:
        after = int(raw)
    except ValueError:
        raise RequestRefused(
            422, "invalid_request", f"bad event id {raw!r}: want an integer"
        ) from None
    if after < 0:
        raise RequestRefused(422, "invalid_request", "the event id must not be negative")
    return after


def stream_response(
    generation: Generation,
    metrics: Metrics,
    *,
    after: int = 0,
    started_at: float | None = None,
) -> SSEResponse:
    """The SSE response for `generation` from `after` on, counted on `metrics`.

    `started_at` (a `perf_counter` reading) is given by the request that started the
    generation: its first delta then feeds the time-to-first-token histogram.
    """
    frames = generation.subscribe(after)
    headers = _headers(generation.chat_id, generation.message_id)
    log, start = generation.log, max(after, generation.first_seq - 1)
    return RelayResponse(
        frames,
        headers=headers,
        metrics=metrics,
        started_at=started_at,
        available=lambda: log.next_seq - 1 - start,
    )


def remote_stream_response(generation: GenerationView, *, after: int) -> SSEResponse:
    """The SSE response for a generation another worker runs, from `after` on."""
    headers = _headers(generation.chat_id, generation.message_id)
    return SSEResponse(generation.subscribe(after), headers=headers)


def _headers(chat_id: str, message_id: str) -> dict[str, str]:
    return {**HEADERS, "x-streamkeep-chat-id": chat_id, "x-streamkeep-message-id": message_id}
