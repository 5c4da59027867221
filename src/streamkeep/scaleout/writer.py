"""`RedisWriter`: one task per process that writes every live generation's frames to Redis.

Appends come from the token hot path and must not wait, so they only queue the frames.
Every `interval` seconds (sooner when `max_batch` frames are waiting) the task sends
everything queued, for all generations, in ONE pipeline: one XADD per generation per
flush, whose entry carries all of that generation's new frames as fields named by their
sequence numbers, with the entry id `{last seq}-0`. Readers (see `redis_log`) therefore
find "everything after frame N" with `XREAD ... N-0`, and drop frames they already have.

A live stream keeps at least its last `maxlen` FRAMES (not entries: one entry holds a
whole flush's worth), trimmed by entry id with `MINID ~ {last - maxlen + 1}`: an entry's
id is its last frame's seq, so an entry below that id holds only older frames. The
default is sized for the longest replies models give (a frame is ~100 bytes), so a
reader on another worker can replay any of them from the start; past it, such a reader
gets `FramesLost` for the trimmed part.
Frame numbers need not start at 1 (a chat's generations number on from one
another): a MINID below a stream's first frame trims nothing.

A flush that fails (Redis unreachable) is queued again in front of newer frames and
retried with backoff; an entry that did land before the failure is refused by Redis on
the retry ("ID equal or smaller"), which is harmless since readers deduplicate by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from streamkeep.scaleout.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# Past this many queued frames while Redis is unreachable, the oldest batch is dropped:
# local readers still have everything; only remote readers lose (and detect) a gap.
MAX_PENDING_FRAMES = 200_000
# Frames a live stream keeps at least (~10 MB at ~100 bytes a frame).
DEFAULT_MAXLEN = 100_000
_MAX_BACKOFF = 2.0


@dataclass(slots=True)
class _Pending:
    """What is queued for one stream key."""

    first_seq: int
    frames: list[bytes] = field(default_factory=list)
    close_after: int | None = None  # set: write the close marker after this seq

    def absorb(self, newer: _Pending) -> None:
        self.frames.extend(newer.frames)
        if newer.close_after is not None:
            self.close_after = newer.close_after


@dataclass(slots=True)
class WriterStats:
    flushes: int = 0  # pipelines sent, i.e. round trips
    frames: int = 0
    failures: int = 0


class RedisWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        interval: float = 0.002,
        max_batch: int = 2000,
        maxlen: int = DEFAULT_MAXLEN,
        expire_after: float = 30.0,
        pointer_ttl: float = 86_400.0,
    ) -> None:
        self._redis = redis
        self._interval = interval
        self._max_batch = max_batch
        self._maxlen = maxlen
        self._expire_ms = max(int(expire_after * 1000), 1)
        self._pointer_ttl_ms = int(pointer_ttl * 1000)
        self._pending: dict[str, _Pending] = {}
        self._pointers: dict[str, bytes] = {}
        self._count = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        # One flush at a time: a later batch must never land before an earlier one.
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.stats = WriterStats()

    # -- queueing (never awaits) ---------------------------------------------------

    def append(self, key: str, first_seq: int, frames: list[bytes]) -> None:
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Pending(first_seq, list(frames))
        else:
            pending.frames.extend(frames)
        self._queued(len(frames))

    def close(self, key: str, last_seq: int) -> None:
        """Queue the close marker (entry `{last_seq}-1`) and the stream's expiry."""
        pending = self._pending.setdefault(key, _Pending(last_seq + 1))
        pending.close_after = last_seq
        self._queued(1)

    def point(self, key: str, value: bytes) -> None:
        """Queue a SET of a small key (with the pointer TTL) in the next flush."""
        self._pointers[key] = value
        self._queued(1)

    def _queued(self, n: int) -> None:
        self._count += n
        self._wakeup.set()
        if self._count >= self._max_batch:
            self._full.set()

    # -- the task ------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="redis-writer")

    async def aclose(self) -> None:
        """Stop the task, then flush what is left (once: Redis may be gone)."""
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.flush()
        except (aioredis.RedisError, OSError) as exc:
            logger.error("could not write the last frames to Redis: %s", exc)

    async def _loop(self) -> None:
        backoff = self._interval
        while True:
            await self._wakeup.wait()
            if not self._full.is_set():
                # Let the other generations' tokens of this moment join the batch.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._full.wait()
            try:
                await self.flush()
                backoff = self._interval
            except (aioredis.RedisError, OSError) as exc:
                self.stats.failures += 1
                logger.warning("writing frames to Redis failed, retrying: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2 + 0.05, _MAX_BACKOFF)

    async def flush(self) -> None:
        """Send everything queued now in one pipeline."""
        async with self._flushing:
            pending, pointers = self._pending, self._pointers
            self._pending, self._pointers, self._count = {}, {}, 0
            self._wakeup.clear()
            self._full.clear()
            if not pending and not pointers:
                return
            try:
                await self._send(pending, pointers)
            except BaseException:
                self._requeue(pending, pointers)
                raise
        self.stats.flushes += 1
        self.stats.frames += sum(len(p.frames) for p in pending.values())

    async def _send(self, pending: dict[str, _Pending], pointers: dict[str, bytes]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, p in pending.items():
                if p.frames:
                    fields: dict[FieldT, EncodableT] = {
                        b"%d" % seq: f for seq, f in enumerate(p.frames, p.first_seq)
                    }
                    last = p.first_seq + len(p.frames) - 1
                    oldest = last - self._maxlen + 1  # the oldest frame to keep
                    minid = f"{oldest}-0" if oldest > 1 else None
                    pipe.xadd(key, fields, id=f"{last}-0", minid=minid, approximate=True)
                if p.close_after is not None:
                    pipe.xadd(key, {b"end": b""}, id=f"{p.close_after}-1")
                    pipe.pexpire(key, self._expire_ms)
            # After the frames: whoever finds a pointer finds its stream.
            for key, value in pointers.items():
                pipe.set(key, value, px=self._pointer_ttl_ms)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError):
                if "equal or smaller" not in str(result):  # else: landed before a retry
                    logger.error("Redis refused a frame write: %s", result)
            elif isinstance(result, Exception):
                raise result

    def _requeue(self, failed: dict[str, _Pending], pointers: dict[str, bytes]) -> None:
        """Put a failed batch back in front of what was queued since."""
        newer = self._pending
        for key, p in newer.items():
            if key in failed:
                failed[key].absorb(p)
            else:
                failed[key] = p
        total = sum(len(p.frames) for p in failed.values())
        if total > MAX_PENDING_FRAMES:
            logger.error("Redis unreachable: dropping %d queued frames", total)
            failed = {
                k: _Pending(p.first_seq + len(p.frames), [], p.close_after)
                for k, p in failed.items()
            }
            total = 0
        self._pending = failed
        self._pointers = {**pointers, **self._pointers}
        self._count = total
        self._wakeup.set()
