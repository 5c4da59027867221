"""The other workers of a deployment, as the generation engine needs them.

A `GenerationManager` runs alone unless it is handed `Peers`; `scaleout.Cluster` is
their implementation over Redis, and the server wires it in. This package never
imports `scaleout`: `scaleout` imports what it implements from here (the event log,
the UI-stream frames, these protocols), as httpx's transports import its models and
never the reverse.

`GenerationView` is what a reader needs of a generation, wherever it runs: both a
`Generation` this process runs and a `scaleout.RemoteGeneration` satisfy it, so
resuming and joining answer with either the same way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from streamkeep.generation.log import EventLog

# Stops this process's generation of a chat; True when that call stopped it.
LocalStop = Callable[[str], Awaitable[bool]]


class GenerationView(Protocol):
    """A generation as its readers see it, here or on another worker."""

    @property
    def id(self) -> str: ...

    @property
    def chat_id(self) -> str: ...

    @property
    def message_id(self) -> str: ...

    @property
    def done(self) -> asyncio.Event:
        """Set once it has ended (for a remote one: once a reader saw its end)."""
        ...

    @property
    def first_seq(self) -> int | None:
        """The event id of its first frame; None while a remote reader has not
        learned it yet."""
        ...

    @property
    def log(self) -> EventLog: ...

    @property
    def traceparent(self) -> str | None:
        """Its span's W3C traceparent, when it is traced (see `generation.tracing`)."""
        ...

    def subscribe(self, after: int = 0) -> AsyncGenerator[bytes, None]:
        """Its frames after event id `after`, live until its end."""
        ...


class Peers(Protocol):
    """What the manager asks of the other workers (see the module docstring)."""

    async def start(
        self, *, local_stop: LocalStop, local_generation_ids: Callable[[], Collection[str]]
    ) -> list[str]:
        """Join: take stop requests for this process's generations (`local_stop`),
        and interrupt what dead workers left running; returns those messages' ids."""
        ...

    async def aclose(self) -> None:
        """Leave, once this process's own generations have ended."""
        ...

    def new_log(
        self,
        generation_id: str,
        chat_id: str,
        message_id: str,
        *,
        resumable: bool,
        first_seq: int,
        announce: bool,
        traceparent: str | None = None,
    ) -> EventLog:
        """The log of a generation this process starts, readable by the others
        (findable at once with `announce`, else once `announce` is called)."""
        ...

    def announce(
        self,
        generation_id: str,
        chat_id: str,
        message_id: str,
        *,
        first_seq: int,
        traceparent: str | None = None,
    ) -> None:
        """Let the others find this generation as its chat's latest (`traceparent`:
        its span's, for theirs to link to)."""
        ...

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's generation on whichever worker runs it; True when stopped."""
        ...

    async def traceparent(self, chat_id: str) -> str | None:
        """The traceparent the chat's latest generation was announced with, if any."""
        ...

    async def find(
        self, chat_id: str, *, generation: tuple[str, str] | None = None
    ) -> GenerationView | None:
        """The chat's generation on another worker (running, or ended recently);
        `generation` (its id and message id) asks for that one in particular."""
        ...
