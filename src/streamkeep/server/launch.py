"""Starting a generation from a request and answering with its stream.

A stream-starting POST may carry `Idempotency-Key`: the manager then hands a retry the
generation its key already started (it joins instead of starting a second one), and the
retry gets that stream from the start, or after its `Last-Event-ID`. A same-key retry
that comes after that generation ended and was forgotten gets a 409
`generation_conflict` with the finished `message_id` and `running: false`: the answer is
stored, fetch that message.

With several workers, the retry may land on a worker other than the one running the
keyed generation: the database then reports the same-key conflict for a generation this
process does not have, and the retry is answered with that generation's stream from
Redis, exactly like a cross-worker resume (`remote_stream_response`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request

from streamkeep.config import Settings
from streamkeep.generation import Generation, GenerationManager
from streamkeep.http.metrics import Metrics
from streamkeep.http.responses import SSEResponse
from streamkeep.server.errors import RequestRefused
from streamkeep.server.relay import remote_stream_response, resume_point, stream_response

MAX_KEY_LENGTH = 200


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise RequestRefused(
            422, "invalid_request", f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} characters"
        )
    return key


def check_length(content: str, settings: Settings, field: str = "content") -> None:
    """Over-long content is refused before anything is written (413)."""
    if len(content) > settings.max_message_chars:
        raise RequestRefused(
            413,
            "message_too_long",
            f"{field} has {len(content)} characters; the limit is {settings.max_message_chars}",
        )


async def launch(
    request: Request,
    start: Callable[[], Awaitable[Generation]],
    metrics: Metrics,
    *,
    manager: GenerationManager,
    chat_id: str | None = None,
    message_id: str | None = None,
) -> SSEResponse:
    """Run `start()` (or join the generation its key runs on another worker: see
    `GenerationManager.join_or_start`) and answer with the generation's stream. The
    chat is `chat_id`, else `message_id`'s (regenerate, edit)."""
    started_at = time.perf_counter()
    after = resume_point(request)  # a bad Last-Event-ID fails before anything starts
    generation = await manager.join_or_start(
        start,
        idempotency_key=request.headers.get("idempotency-key"),  # the route has checked it
        chat_id=chat_id,
        message_id=message_id,
    )
    if not isinstance(generation, Generation):  # another worker runs it
        # An `after` below its first id (an earlier reply's) reads it from the start:
        # the log sees to that.
        return remote_stream_response(generation, after=after)
    if metrics.track(generation):
        return stream_response(generation, metrics, after=after, started_at=started_at)
    return stream_response(generation, metrics, after=after)  # a retry joined it
