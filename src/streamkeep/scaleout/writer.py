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
default is sized for the longest replies models give, so a reader on another worker
can replay any of them from the start; past it, such a reader gets `FramesLost` for
the trimmed part.
Frame numbers need not start at 1 (a chat's generations number on from one
another): a MINID below a stream's first frame trims nothing.

A flush that fails (Redis unreachable) is queued again in front of newer frames and
retried with backoff; an entry that did land before the failure is refused by Redis on
the retry ("ID equal or smaller"), which is harmless since readers deduplicate by seq.

Redis may also come back empty (restarted without persistence): the streams and chat
pointers written before are gone, and the frames written after would start mid-reply.
Every flush therefore reads the deployment's epoch key first (one more command in the
same pipeline); when it is missing, or another writer has set a new one since, Redis
lost its data and the writer writes every log it still tracks (live, or ended within
its retention) again whole, with its pointer, in one transaction: the owner still holds
every frame. A flush after a failure checks first, so a restart seen as an outage is
repaired before anything lands; one that no flush saw fail (a quick restart between two
flushes) is repaired right after the flush that found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from streamkeep.scaleout.tasks import cancel_and_wait, end_if_cancelled

logger = logging.getLogger(__name__)

# Past this many queued frames while Redis is unreachable, the oldest batch is dropped:
# local readers still have everything; only remote readers lose (and detect) a gap.
MAX_PENDING_FRAMES = 200_000
# Frames a live stream keeps at least.
DEFAULT_MAXLEN = 100_000
_MAX_BACKOFF = 2.0


class Replayable(Protocol):
    """A log whose owner can write it again whole (see the module docstring)."""

    key: str
    pointer: tuple[str, bytes] | None  # its chat's pointer (key, value), once announced

    def snapshot(self) -> tuple[int, list[bytes], bool]:
        """(first seq, every frame so far, closed)."""
        ...


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
    restores: int = 0  # times Redis was found to have lost what was written


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
        epoch_key: str | None = None,
    ) -> None:
        """`epoch_key` (shared by every writer of the deployment) turns on the check
        that Redis still has what was written (see the module docstring)."""
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
        # Told how long each pipeline that went through took, in seconds (metrics).
        self.on_flush: Callable[[float], None] | None = None
        self._epoch_key = epoch_key
        self._epoch: bytes | None = None  # as the last flush found it
        self._suspect = False  # a flush failed: Redis may come back empty
        # The logs to write again should Redis lose them: held while their generation is.
        self._logs: weakref.WeakValueDictionary[str, Replayable] = weakref.WeakValueDictionary()

    @property
    def queued(self) -> int:
        """Frames (and pointers) waiting for the next pipeline."""
        return self._count

    def track(self, log: Replayable) -> None:
        """Keep `log` to write again whole should Redis lose it (weakly: a log no one
        holds any more is not written again)."""
        self._logs[log.key] = log

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

    def point(self, key: str, value: bytes, *, stream: str | None = None) -> None:
        """Queue a SET of a small key (with the pointer TTL) in the next flush; when it
        points at a tracked log's `stream`, it is written again with that log."""
        self._pointers[key] = value
        log = self._logs.get(stream) if stream is not None else None
        if log is not None:
            log.pointer = (key, value)
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
                end_if_cancelled()
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
                if self._suspect and self._epoch_key is not None:
                    # Back from an outage: empty? Repair that before anything lands.
                    await self._check_epoch(await self._redis.get(self._epoch_key))
                self._suspect = False
                started = time.perf_counter()
                await self._send(pending, pointers)
                if self.on_flush is not None:
                    self.on_flush(time.perf_counter() - started)
            except BaseException:
                self._requeue(pending, pointers)
                self._suspect = True  # Redis may come back empty
                raise
        self.stats.flushes += 1
        self.stats.frames += sum(len(p.frames) for p in pending.values())

    async def _send(self, pending: dict[str, _Pending], pointers: dict[str, bytes]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            if self._epoch_key is not None:
                pipe.get(self._epoch_key)  # first: its answer is results[0]
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
        _check_results(results)
        if self._epoch_key is not None:
            await self._check_epoch(results[0])

    # -- Redis that lost its data --------------------------------------------------

    async def _check_epoch(self, seen: Any) -> None:
        """Learn the epoch; if Redis lost what this writer wrote, write it again."""
        if self._epoch_key is None or (seen is not None and seen == self._epoch):
            return
        if seen is None:  # an empty Redis (or the deployment's first writer): set one
            # A new value each time: every other writer must see it change.
            token = uuid.uuid4().hex.encode()
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._epoch_key, token, nx=True)
                pipe.get(self._epoch_key)
                _, seen = await pipe.execute()
        if self._epoch is not None:  # it had one: everything written since is gone
            logger.warning(
                "Redis lost its data (restarted?): writing %d stream(s) again", len(self._logs)
            )
            await self._restore()
            self.stats.restores += 1
        self._epoch = seen

    async def _restore(self) -> None:
        """Write every tracked log again whole, and its pointer, in one transaction
        (readers never see a stream half rewritten)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for key, log in list(self._logs.items()):
                first, frames, closed = log.snapshot()
                if len(frames) > self._maxlen:  # what a live stream keeps at least
                    first, frames = first + len(frames) - self._maxlen, frames[-self._maxlen :]
                pipe.delete(key)  # the frames written since it came back, if any
                self._add_frames(pipe, key, first, frames)
                if closed:
                    pipe.xadd(key, {b"end": b""}, id=f"{first + len(frames) - 1}-1")
                    pipe.pexpire(key, self._expire_ms)
                if log.pointer is not None:
                    pipe.set(log.pointer[0], log.pointer[1], px=self._pointer_ttl_ms)
            _check_results(await pipe.execute(raise_on_error=False))

    def _add_frames(self, pipe: Pipeline, key: str, first: int, frames: list[bytes]) -> None:
        """XADDs of `frames` (numbered from `first`), `max_batch` to an entry."""
        for start in range(0, len(frames), self._max_batch):
            chunk = frames[start : start + self._max_batch]
            fields: dict[FieldT, EncodableT] = {
                b"%d" % seq: f for seq, f in enumerate(chunk, first + start)
            }
            pipe.xadd(key, fields, id=f"{first + start + len(chunk) - 1}-0")

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


def _check_results(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, ResponseError):
            if "equal or smaller" not in str(result):  # else: landed before a retry
                logger.error("Redis refused a frame write: %s", result)
        elif isinstance(result, Exception):
            raise result
