"""Event logs over Redis Streams: how a generation's frames reach other workers.

`RedisEventLog` is the log of a generation this process runs: an `InProcessEventLog`
(which this process's own subscribers read, with no Redis round trip) whose appends are
also queued on the process's `RedisWriter`. `RemoteEventLog` is the read-only view of a
generation running elsewhere, read with XREAD from its stream.

Stream layout (one per generation): entry `{s}-0` holds frames as fields named by their
sequence numbers, the last of them `s`; the entry `{s}-1` with the field `end` is the
close marker, after the last frame `s`. So "every frame after N" is `XREAD ... N-0`, then
drop the frames numbered N or less of the first entry. A generation's frames are
numbered from its `first_seq` (its chat's generations number on from one another): a
reader after an N below it reads from `first_seq - 1`, i.e. the whole stream. Should a
reader not know `first_seq` (a stream found without its chat's pointer), it takes
the first frame it reads from a cursor below that frame as the first one.

A reader ends at the close marker. When a blocking XREAD comes back empty it looks at
the stream's end and asks whether the owner still runs the generation; either answer
can be newer than what its XREAD saw (the owner stores the answer in the database, THEN
appends its last frames, which its writer sends a moment later). So a reader that learns
the generation is over reads once more, waiting up to `drain_ms` for frames still on
their way, and returns only at the close marker or once nothing more comes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import redis.asyncio as aioredis

from streamkeep.generation.log import InProcessEventLog
from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.writer import RedisWriter

END_FIELD = b"end"
# How long one blocking XREAD waits before the reader checks that the stream can
# still grow (it expired, it ended before the reader's cursor, its owner died).
DEFAULT_BLOCK_MS = 1000
# How long a reader that learned the generation is over still waits for its last frames
# (an owner's writer sends them within milliseconds; longer while it retries a failure).
DEFAULT_DRAIN_MS = 2000

# What a reader does after a blocking XREAD found nothing new.
_Next = Literal["wait", "drain", "done"]


class FramesLost(Exception):
    """The stream was trimmed (or a write dropped) before a reader got these frames."""


class RedisEventLog:
    """The `EventLog` of a generation this process runs, mirrored to Redis."""

    __slots__ = ("__weakref__", "_local", "_writer", "key", "pointer")

    def __init__(self, writer: RedisWriter, key: str, *, first_seq: int = 1) -> None:
        self.key = key
        self.pointer: tuple[str, bytes] | None = None  # set by the writer (`point`)
        self._writer = writer
        self._local = InProcessEventLog(first_seq)
        writer.track(self)  # written again whole should Redis lose it

    @property
    def first_seq(self) -> int:
        return self._local.first_seq

    @property
    def next_seq(self) -> int:
        return self._local.next_seq

    @property
    def closed(self) -> bool:
        return self._local.closed

    def append(self, frames: list[bytes]) -> None:
        first = self._local.next_seq
        self._local.append(frames)
        self._writer.append(self.key, first, frames)

    def close(self) -> None:
        if self._local.closed:
            return
        self._local.close()
        self._writer.close(self.key, self._local.next_seq - 1)

    def read(self, after: int = 0) -> AsyncIterator[bytes]:
        return self._local.read(after)

    def snapshot(self) -> tuple[int, list[bytes], bool]:
        """(first seq, every frame so far, closed): what the writer writes again."""
        return self._local.first_seq, self._local.frames(), self._local.closed

    @classmethod
    async def open_remote(
        cls,
        redis: aioredis.Redis,
        generation_id: str,
        *,
        keys: Keys | None = None,
        still_running: Callable[[], Awaitable[bool]] | None = None,
        block_ms: int = DEFAULT_BLOCK_MS,
        drain_ms: int = DEFAULT_DRAIN_MS,
        first_seq: int | None = 1,
    ) -> RemoteEventLog | None:
        """A read-only log of a generation run anywhere; None when it has no stream.
        `first_seq` is its first frame's number (None: unknown, see the module)."""
        key = (keys or Keys()).generation(generation_id)
        last = await redis.xrevrange(key, count=1)
        if not last:
            return None
        entry_id, fields = last[0]
        seq = _seq_of(entry_id)
        closed = fields is not None and END_FIELD in fields
        return RemoteEventLog(
            redis,
            key,
            next_seq=seq + 1,
            closed=closed,
            still_running=still_running,
            block_ms=block_ms,
            drain_ms=drain_ms,
            first_seq=first_seq,
        )


class RemoteEventLog:
    """A generation's log as another worker sees it: read-only, from Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        *,
        next_seq: int,
        closed: bool,
        still_running: Callable[[], Awaitable[bool]] | None = None,
        block_ms: int = DEFAULT_BLOCK_MS,
        drain_ms: int = DEFAULT_DRAIN_MS,
        first_seq: int | None = 1,
    ) -> None:
        self.key = key
        self._redis = redis
        self._first_seq = first_seq
        self._next_seq = next_seq
        self._closed = closed
        self._still_running = still_running
        self._block_ms = block_ms
        self._drain_ms = drain_ms

    @property
    def first_seq(self) -> int | None:
        """The first frame's number; None until a reader learned it (see the module)."""
        return self._first_seq

    @property
    def next_seq(self) -> int:
        """As of the last look at the stream (opening it, or reading its end)."""
        return self._next_seq

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, frames: list[bytes]) -> None:
        raise TypeError("a remote event log is read-only")

    def close(self) -> None:
        raise TypeError("a remote event log is read-only")

    async def read(self, after: int = 0) -> AsyncIterator[bytes]:
        last = max(after, 0)
        if self._first_seq is not None:
            last = max(last, self._first_seq - 1)  # an earlier generation's id: from the start
        cursor: bytes | str = f"{last}-0"
        draining = False  # the generation is over: take what is left, then return
        while True:
            block = self._drain_ms if draining else self._block_ms
            response: Any = await self._redis.xread({self.key: cursor}, block=block)
            if not response:
                if draining:
                    return  # nothing more came: its owner died, or the stream expired
                next_step = await self._after_wait(cursor)
                if next_step == "done":
                    return
                draining = next_step == "drain"
                continue
            frames: list[bytes] = []
            ended = False
            entries = response[0][1]
            if self._first_seq is None:
                # The first frame after a cursor below it is the stream's first (it is
                # trimmed only once far longer than a pointer takes to be written).
                first = _first_frame(entries[0][1])
                if first is not None and first > last + 1:
                    self._first_seq = first
                    last = first - 1
            for entry_id, fields in entries:
                cursor = entry_id
                ended = END_FIELD in fields
                last = _take_frames(fields, last, frames)
            self._next_seq = max(self._next_seq, last + 1)
            if frames:
                yield frames[0] if len(frames) == 1 else b"".join(frames)
            if ended:
                self._closed = True
                return

    async def _after_wait(self, cursor: bytes | str) -> _Next:
        """After a blocking XREAD found nothing: wait again, drain, or end."""
        last = await self._redis.xrevrange(self.key, count=1)
        if last and last[0][1] is not None and END_FIELD in last[0][1]:
            self._closed = True
            # Ended at or before the cursor: all read. Else it ended after our XREAD
            # gave up: its last frames are in the stream now, before the marker.
            end_id = last[0][0] or "0-0"
            return "drain" if _id_of(end_id) > _id_of(cursor) else "done"
        if self._still_running is not None:
            if await self._still_running():
                return "wait"  # its owner may not have written yet
            return "drain"  # over (or its owner is dead): its last frames may be on their way
        return "wait" if last else "done"  # a stream that expired (or never was) won't grow


def _take_frames(fields: dict[bytes, bytes], last: int, out: list[bytes]) -> int:
    """Append the frames after `last` to `out`, in order; return the new last seq."""
    for name, frame in fields.items():
        if name == END_FIELD:
            continue
        seq = int(name)
        if seq <= last:
            continue  # a replay of the entry holding `after`, or a retried write
        if seq != last + 1:
            raise FramesLost(f"frames {last + 1}..{seq - 1} are no longer in the stream")
        out.append(frame)
        last = seq
    return last


def _first_frame(fields: dict[bytes, bytes]) -> int | None:
    seqs = [int(name) for name in fields if name != END_FIELD]
    return min(seqs) if seqs else None


def _id_of(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def _seq_of(entry_id: bytes | str | None) -> int:
    if entry_id is None:
        return 0
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])
