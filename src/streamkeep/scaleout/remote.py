"""A generation running on another worker, as the resume route sees it.

It is a `generation.peers.GenerationView`, as a local `Generation` is:
`server.relay.remote_stream_response` answers with it the way it answers with a local
one, the same headers and the frames as they are stored.

A remote read can fail where a local one cannot: the frames after the client's
`Last-Event-ID` were trimmed from the stream (`FramesLost`), or Redis went away. The
stream then ends with a UI-message-stream `error` chunk and `[DONE]`, so the client
shows an error (and can reload the stored message) instead of a broken connection.
Those frames carry no `id:`: they are not frames of the generation, and a client's
last event id stays the last real frame it got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from streamkeep.generation.ui_stream import UIStreamEncoder
from streamkeep.scaleout.redis_log import FramesLost, RemoteEventLog
from streamkeep.sse import DONE, frames

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RemoteGeneration:
    id: str
    chat_id: str
    message_id: str
    log: RemoteEventLog
    done: asyncio.Event = field(default_factory=asyncio.Event)
    traceparent: str | None = None  # its span's, as its worker announced it

    def __post_init__(self) -> None:
        if self.log.closed:
            self.done.set()

    @property
    def first_seq(self) -> int | None:
        """Its first frame's number, when known (see `RemoteEventLog`)."""
        return self.log.first_seq

    async def subscribe(self, after: int = 0) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self.log.read(after):
                yield chunk
        except FramesLost as exc:
            logger.warning(
                "resuming generation %s (chat %s) after %d: %s",
                self.id,
                self.chat_id,
                after,
                exc,
            )
            yield error_frames(
                "This reply can no longer be resumed from where it stopped (part of it "
                "was dropped from the live stream); reload the chat to get the stored reply."
            )
            return
        except (aioredis.RedisError, OSError) as exc:
            logger.error(
                "reading generation %s (chat %s) from Redis failed: %s", self.id, self.chat_id, exc
            )
            yield error_frames(
                "The live stream of this reply was lost; reload the chat to get the stored reply."
            )
            return
        if self.log.closed:
            self.done.set()


def error_frames(error_text: str) -> bytes:
    """An `error` chunk and `[DONE]`, as SSE frames without an `id:`."""
    return frames([*UIStreamEncoder().error(error_text), DONE])
