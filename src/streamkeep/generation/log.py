"""The per-generation event log: the buffer every subscriber of a generation reads.

The generation appends pre-encoded SSE frames as tokens arrive; any number of readers
replay from any sequence number and then follow live until the log is closed. The
interface is small on purpose so a Redis Streams log can stand in for this in-process one
when several workers share live generations.

Sequence numbers count up in append order from the log's `first_seq`; frame `n` carries
`id: n`, so a client's `Last-Event-ID: n` resumes with frame `n + 1`. A chat's
generations number on from one another (`first_seq` is one past the chat's
`event_seq`), so an id below a log's first one is a client's id from an earlier
generation of the chat: reading after it replays this log from its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol


class EventLog(Protocol):
    """An append-only, replayable, closeable sequence of frames."""

    @property
    def first_seq(self) -> int | None:
        """The sequence number of the first frame (None: not known yet, see
        `RemoteEventLog`)."""
        ...

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended frame gets (the encoder writes it in)."""
        ...

    @property
    def closed(self) -> bool: ...

    def append(self, frames: list[bytes]) -> None:
        """Add frames (numbered from `next_seq`). Never blocks: it is on the token path."""
        ...

    def close(self) -> None:
        """No more frames will come; readers end once they have read everything."""
        ...

    def read(self, after: int = 0) -> AsyncIterator[bytes]:
        """Everything after sequence number `after` (from the start if `after` is below
        `first_seq`), then live frames until the close.

        Frames available at one wake-up are joined into one bytes, so a slow reader
        catches up in one write instead of thousands.
        """
        ...


class InProcessEventLog:
    """An `EventLog` held in memory by the process that runs the generation."""

    __slots__ = ("_closed", "_first", "_frames", "_wakeup")

    def __init__(self, first_seq: int = 1) -> None:
        if first_seq < 1:
            raise ValueError("sequence numbers start at 1 or above")
        self._first = first_seq
        self._frames: list[bytes] = []
        self._closed = False
        # One future all waiting readers await, made only while some reader waits, so
        # appends with nobody waiting cost nothing (a bare future: an asyncio.Event
        # costs a future, a list and a loop check per wait on the per-token path).
        self._wakeup: asyncio.Future[None] | None = None

    @property
    def first_seq(self) -> int:
        return self._first

    @property
    def next_seq(self) -> int:
        return self._first + len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self) -> list[bytes]:
        """A copy of every frame so far (for writing the log elsewhere again)."""
        return list(self._frames)

    def append(self, frames: list[bytes]) -> None:
        if self._closed:
            raise RuntimeError("append to a closed event log")
        self._frames.extend(frames)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def read(self, after: int = 0) -> AsyncIterator[bytes]:
        cursor = max(after - (self._first - 1), 0)  # an index into `_frames`
        frames = self._frames
        while True:
            end = len(frames)
            if cursor < end:
                yield frames[cursor] if end - cursor == 1 else b"".join(frames[cursor:end])
                cursor = end
                continue
            if self._closed:
                return
            wakeup = self._wakeup
            if wakeup is None or wakeup.done():
                wakeup = self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await wakeup
            except asyncio.CancelledError:
                # A reader cancelled while waiting (its client left) cancels the shared
                # future, and so wakes the others with CancelledError too: only the
                # reader whose task is being cancelled stops; the others look again.
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
