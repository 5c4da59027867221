"""Starting a generation from a request and answering with its stream.

A stream-starting POST may carry `Idempotency-Key`: the manager then hands a retry the
generation its key already started (it joins instead of starting a second one), and the
retry gets that stream from the start, or after its `Last-Event-ID`. A same-key retry
that comes after that generation ended and was forgotten gets a 409
`generation_conflict` with the finished `message_id` and `running: false`: the answer is
stored, fetch that message.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from streamkeep.config import Settings
from streamkeep.generation import Generation
from streamkeep.server.errors import ApiError
from streamkeep.server.metrics import Metrics
from streamkeep.server.relay import resume_point, stream_response
from streamkeep.server.sse import SSEResponse

MAX_KEY_LENGTH = 200


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise ApiError(
            422, "invalid_request", f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters"
        )
    return key


def check_length(content: str, settings: Settings) -> None:
    """Over-long content is refused before anything is written (413)."""
    if len(content) > settings.max_message_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"content has {len(content)} characters; the limit is {settings.max_message_chars}",
        )


async def launch(
    request: Request, start: Callable[[], Awaitable[Generation]], metrics: Metrics
) -> SSEResponse:
    """Run `start()` and answer with the generation's stream."""
    started_at = time.perf_counter()
    after = resume_point(request)  # a bad Last-Event-ID fails before anything starts
    generation = await start()
    if metrics.track(generation):
        return stream_response(generation, metrics, after=after, started_at=started_at)
    return stream_response(generation, metrics, after=after)  # a retry joined it
