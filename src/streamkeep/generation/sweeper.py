"""Recovery for a process without peers: interrupting what dead processes left running.

Another live process may share the database (a second `serve`, `chat --local`), so a
generation is an orphan only once its heartbeat is `stale_after` old. The sweeper
interrupts those at start, then now and then, since the orphans of a crash just
before this start go stale only later. (With Redis, `scaleout.liveness` does this,
also asking which workers are alive.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)


class OrphanSweeper:
    def __init__(
        self,
        store: ChatStore,
        local_generation_ids: Callable[[], Collection[str]],
        *,
        stale_after: float,
        period: float,
    ) -> None:
        self._store = store
        self._local = local_generation_ids
        self._stale_after = timedelta(seconds=stale_after)
        self._period = period
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[str]:
        """Sweep once, then keep sweeping; returns the messages the first sweep
        interrupted."""
        orphans = await self.sweep()
        self._task = asyncio.create_task(self._loop(), name="streamkeep-orphan-sweep")
        return orphans

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> list[str]:
        """Interrupt the stale generations other than this process's own."""
        return await self._store.interrupt_orphans(
            exclude_generation_ids=list(self._local()),
            stale_before=datetime.now(UTC) - self._stale_after,
        )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                if orphans := await self.sweep():
                    logger.warning("marked %d silent generation(s) interrupted", len(orphans))
            except Exception:  # the database may be away; the next sweep tries again
                logger.exception("orphan sweep failed")
