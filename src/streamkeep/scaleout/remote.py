"""A generation running on another worker, as the resume route sees it.

It has what the route needs of a local `Generation` (ids, `done`, `log`, `subscribe`);
`server.relay.remote_stream_response` answers with it the way it answers with a local
one: the same headers, the frames as they are stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from streamkeep.scaleout.redis_log import RemoteEventLog


@dataclass(slots=True)
class RemoteGeneration:
    id: str
    chat_id: str
    message_id: str
    log: RemoteEventLog
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.log.closed:
            self.done.set()

    async def subscribe(self, after: int = 0) -> AsyncIterator[bytes]:
        async for chunk in self.log.read(after):
            yield chunk
        if self.log.closed:
            self.done.set()
