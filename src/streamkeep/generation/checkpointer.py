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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from streamkeep.generation.generation import write_final

if TYPE_CHECKING:
    from streamkeep.generation.generation import Generation
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)


class Checkpointer:
    def __init__(
        self,
        store: ChatStore,
        generations: Callable[[], Iterable[Generation]],
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
        self._pending_finals: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def pending_final_writes(self) -> int:
        return len(self._pending_finals)

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
            try:
                await self.tick()
            except Exception:  # the database is down: the next tick tries again
                logger.exception("checkpoint tick failed")

    async def tick(self) -> None:
        live = [g for g in self._generations() if not g.finalizing]
        await self._checkpoint([g for g in live if g.dirty])
        if live:
            await self._store.heartbeat([g.id for g in live], self._worker_id)
        await self._retry_finals()

    async def _checkpoint(self, dirty: list[Generation]) -> None:
        if not dirty:
            return
        items = []
        reserves: list[tuple[Generation, int]] = []
        for gen in dirty:
            gen.dirty = False
            items.append((gen.message_id, gen.parts()))
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

    async def settle(self, gen: Generation) -> None:
        """Wait until no checkpoint of `gen` is being written.

        Called by a generation (already marked finalizing, so no new batch takes it)
        before its final write, so an older checkpoint can never land on top of it.
        """
        done = self._inflight_done
        if done is not None and gen.message_id in self._inflight:
            await done.wait()

    def retry_later(self, final_write_args: dict[str, Any]) -> None:
        self._pending_finals[final_write_args["message_id"]] = final_write_args

    async def _retry_finals(self) -> None:
        for message_id, args in list(self._pending_finals.items()):
            if await write_final(self._store, args):
                del self._pending_finals[message_id]
                logger.info("stored message %s after earlier failures", message_id)
