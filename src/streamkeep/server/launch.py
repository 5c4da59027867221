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
from streamkeep.scaleout import RemoteGeneration
from streamkeep.server.errors import RequestRefused
from streamkeep.server.relay import remote_stream_response, resume_point, stream_response
from streamkeep.store import ChatStore, GenerationConflict, NotFound

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
    store: ChatStore,
    chat_id: str | None = None,
    message_id: str | None = None,
) -> SSEResponse:
    """Run `start()` and answer with the generation's stream.

    The chat is `chat_id`, else `message_id`'s (regenerate, edit). With a cluster, a
    keyed request first asks the database whether its key already runs on another
    worker: such a retry joins that generation without `start()` asking the provider
    for an answer that would only be thrown away.
    """
    started_at = time.perf_counter()
    after = resume_point(request)  # a bad Last-Event-ID fails before anything starts
    key = request.headers.get("idempotency-key")  # the route has checked it
    if key is not None and manager.cluster is not None:
        remote = await _keyed_elsewhere(manager, store, key, chat_id, message_id)
        if remote is not None:
            return remote_stream_response(remote, after=after)
    try:
        generation = await start()
    except GenerationConflict as conflict:  # its key started it meanwhile, elsewhere?
        remote = await _remote_join(manager, store, conflict, chat_id)
        if remote is None:
            raise
        # An `after` below its first id (an earlier reply's) reads it from the start:
        # the log sees to that.
        return remote_stream_response(remote, after=after)
    if metrics.track(generation):
        return stream_response(generation, metrics, after=after, started_at=started_at)
    return stream_response(generation, metrics, after=after)  # a retry joined it


async def _keyed_elsewhere(
    manager: GenerationManager,
    store: ChatStore,
    key: str,
    chat_id: str | None,
    message_id: str | None,
) -> RemoteGeneration | None:
    """The running generation another worker started with this key, if any."""
    try:
        if chat_id is None:
            if message_id is None:
                return None
            chat_id = (await store.get_message(message_id)).chat_id
        conflict = await store.find_conflict(chat_id, key)
    except NotFound:
        return None  # `start()` answers 404
    if conflict is None or manager.get(conflict.generation_id) is not None:
        return None  # nothing to join, or this process has it: `start()` joins it
    return await _remote_join(manager, store, conflict, chat_id)


async def _remote_join(
    manager: GenerationManager,
    store: ChatStore,
    conflict: GenerationConflict,
    chat_id: str | None,
) -> RemoteGeneration | None:
    """The other worker's generation a same-key retry joins: the running one the
    conflict names, read from Redis as a resume reads it. None without a cluster, or
    for any other conflict."""
    cluster = manager.cluster
    if not (conflict.same_key and conflict.running) or cluster is None:
        return None
    if chat_id is None:
        try:
            chat_id = (await store.get_generation(conflict.generation_id)).chat_id
        except NotFound:
            return None  # its chat was deleted meanwhile
    return await cluster.find(chat_id, generation=(conflict.generation_id, conflict.message_id))
