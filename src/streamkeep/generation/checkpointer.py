"""One task per process that saves live answers in batches.

Every `interval` seconds it takes the generations whose content changed since the last
tick (a dirty flag the run loop sets: nothing happens per token), writes all their parts
in ONE transaction (raising, for those running low on reserved event ids, their chats'
`event_seq` ahead of the frames they have sent), and heartbeats the live generations so
other workers can tell them from orphans. It also retries final writes that failed
while the database was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from streamkeep.generation.final import FinalWrite, write_final
from streamkeep.generation.parts import UIPart, as_json

if TYPE_CHECKING:
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)


class Checkpointed(Protocol):
    """What the checkpointer needs of a live generation (`Generation` has it)."""

    id: str
    chat_id: str
    message_id: str
    # Its end is being written: checkpoints must no longer touch the message.
    finalizing: bool
    # Set by the generation on new content, cleared here once it is being saved.
    dirty: bool
    # The chat's `event_seq` as last written for it (None: it numbers no chat events).
    seq_reserved: int | None

    def parts(self) -> list[UIPart]: ...

    def seq_to_reserve(self) -> int | None: ...


class Checkpointer:
    def __init__(
        self,
        store: ChatStore,
        generations: Callable[[], Iterable[Checkpointed]],
        *,
        interval: float,
        worker_id: str,
    ) -> None:
        self._store = store
        self._generations = generations
        self._interval = interval
        self._worker_id = worker_id
        # Message ids of the batch being written, and the event set once it is written.
        self._inflight: frozenset[str] = frozenset()
        self._inflight_done: asyncio.Event | None = None
        self._pending_finals: dict[str, FinalWrite] = {}
        self._task: asyncio.Task[None] | None = None
        self._failed_ticks = 0  # in a row, for the log
        # When the last tick stored everything it had to (monotonic): the checkpoint lag.
        self.last_success = time.monotonic()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="checkpointer")

    async def stop(self) -> None:
        """Stop ticking, then try once more to store the finals that failed before."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._retry_finals()
        for message_id in self._pending_finals:
            logger.error("message %s could not be stored before shutdown", message_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.tick_or_log()

    async def tick_or_log(self) -> None:
        """One tick of the loop. While the database is down every tick fails: the first
        failure is logged with its traceback, then one line at the 2nd, 4th, 8th...
        failure in a row (not one traceback a second), and a line when ticks work again."""
        try:
            await self.tick()
        except Exception as exc:  # the database is down: the next tick tries again
            self._failed_ticks += 1
            n = self._failed_ticks
            if n == 1:
                logger.exception("checkpoint tick failed; retrying every %gs", self._interval)
            elif n & (n - 1) == 0:
                logger.warning("checkpoint tick failed %d times in a row: %s", n, exc)
            return
        self.last_success = time.monotonic()
        if self._failed_ticks:
            logger.warning("checkpoints work again after %d failed ticks", self._failed_ticks)
            self._failed_ticks = 0

    async def tick(self) -> None:
        live = [g for g in self._generations() if not g.finalizing]
        await self._checkpoint([g for g in live if g.dirty])
        if live:
            await self._store.heartbeat([g.id for g in live], self._worker_id)
        await self._retry_finals()

    async def _checkpoint(self, dirty: list[Checkpointed]) -> None:
        if not dirty:
            return
        items = []
        reserves: list[tuple[Checkpointed, int]] = []
        for gen in dirty:
            gen.dirty = False
            items.append((gen.message_id, as_json(gen.parts())))
            seq = gen.seq_to_reserve()
            if seq is not None:
                reserves.append((gen, seq))
        self._inflight = frozenset(m for m, _ in items)
        self._inflight_done = done = asyncio.Event()
        try:
            await self._store.checkpoint(items, [(g.chat_id, seq) for g, seq in reserves])
            for gen, seq in reserves:
                gen.seq_reserved = seq
        except BaseException:
            for gen in dirty:
                gen.dirty = True  # not saved: try again next tick
            raise
        finally:
            self._inflight = frozenset()
            self._inflight_done = None
            done.set()

    async def settle(self, gen: Checkpointed) -> None:
        """Wait until no checkpoint of `gen` is being written.

        Called by a generation (already marked finalizing, so no new batch takes it)
        before its final write, so an older checkpoint can never land on top of it.
        """
        done = self._inflight_done
        if done is not None and gen.message_id in self._inflight:
            await done.wait()

    def retry_later(self, write: FinalWrite) -> None:
        """Keep a final write that failed, to try again on every tick."""
        self._pending_finals[write.message_id] = write

    async def _retry_finals(self) -> None:
        for message_id, write in list(self._pending_finals.items()):
            if await write_final(self._store, write):
                del self._pending_finals[message_id]
                logger.info("stored message %s after earlier failures", message_id)
