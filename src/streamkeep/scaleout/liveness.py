"""Which workers are alive, and ending the generations of those that are not.

Each worker keeps a key `{prefix}worker:{worker_id}` with a TTL and refreshes it well
before it expires; a worker that dies (SIGKILL, host lost) simply stops refreshing it.
Its id is also in the set `{prefix}workers`, so that listing who is alive reads that set
and checks each member's key (one script: as many steps as workers, whatever else the
database holds); the ids of workers whose key expired are dropped from it there.

One rule uses it, as one UPDATE in the store (so a generation started meanwhile by a
live worker can never be caught): at start, then every `interval`, a `Reaper`
interrupts the running generations whose database heartbeat is older than
`stale_after` and whose worker is not alive: both signals must agree, so a worker
that is merely slow to reach the database keeps its work. While Redis is unreachable
the heartbeat decides alone (see `Reaper.reap`).
`on_interrupted` then gets the interrupted messages (the cluster gives
their Redis streams the expiry a normal end gives them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.tasks import cancel_and_wait, end_if_cancelled
from streamkeep.store.repository import utcnow

if TYPE_CHECKING:
    from streamkeep.store.repository import ChatStore

logger = logging.getLogger(__name__)

DEFAULT_TTL = 10.0
DEFAULT_STALE_AFTER = 15.0
DEFAULT_REAP_INTERVAL = 5.0

# KEYS[1]: the set of worker ids; ARGV[1]: the prefix of their presence keys.
# Returns the ids whose key exists, and forgets the others (atomically, so a worker
# registering meanwhile is never forgotten: its SET and SADD go in one transaction).
_ALIVE = """
local alive = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then
    alive[#alive + 1] = id
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return alive
"""

# Gets the message ids a reaping interrupted.
InterruptedHandler = Callable[[list[str]], Awaitable[None]]


class WorkerRegistry:
    """This worker's presence in Redis, and who else is present."""

    def __init__(
        self,
        redis: aioredis.Redis,
        worker_id: str,
        *,
        keys: Keys | None = None,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self.worker_id = worker_id
        self._redis = redis
        self._keys = keys or Keys()
        self._ttl_ms = int(ttl * 1000)
        self._refresh = ttl / 4  # three refreshes may fail before the key expires
        self._task: asyncio.Task[None] | None = None
        self._alive = redis.register_script(_ALIVE)

    async def register(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.worker(self.worker_id), b"1", px=self._ttl_ms)
            pipe.sadd(self._keys.workers, self.worker_id)
            await pipe.execute()

    async def start(self) -> None:
        """Register (if Redis answers now: else the refresh loop keeps trying)."""
        try:
            await self.register()
        except (aioredis.RedisError, OSError) as exc:
            logger.error("Redis unreachable at start, registering later: %s", exc)
        self._task = asyncio.create_task(self._loop(), name="worker-heartbeat")

    async def aclose(self, *, leave: bool = True) -> None:
        """Stop refreshing; with `leave`, remove the key now rather than at its TTL."""
        await cancel_and_wait(self._task)
        self._task = None
        if leave:
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.delete(self._keys.worker(self.worker_id))
                    pipe.srem(self._keys.workers, self.worker_id)
                    await pipe.execute()
            except (aioredis.RedisError, OSError) as exc:
                logger.warning("could not remove worker key (it expires anyway): %s", exc)

    async def alive(self) -> set[str]:
        """Ids of the workers whose key has not expired."""
        keys = self._keys
        ids = await self._alive(keys=[keys.workers], args=[keys.worker("")])
        return {i.decode() if isinstance(i, bytes) else str(i) for i in ids}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.register()
            except (aioredis.RedisError, OSError) as exc:
                end_if_cancelled()
                logger.warning("worker heartbeat to Redis failed: %s", exc)


class Reaper:
    """Interrupts the generations of dead workers; see the module docstring."""

    def __init__(
        self,
        store: ChatStore,
        registry: WorkerRegistry,
        *,
        local_generation_ids: Callable[[], Collection[str]],
        stale_after: float = DEFAULT_STALE_AFTER,
        interval: float = DEFAULT_REAP_INTERVAL,
        clock: Callable[[], datetime] = utcnow,
        on_interrupted: InterruptedHandler | None = None,
    ) -> None:
        self._store = store
        self._on_interrupted = on_interrupted
        self._registry = registry
        self._local = local_generation_ids
        self._stale_after = timedelta(seconds=stale_after)
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def recover_at_start(self) -> list[str]:
        """At start: what `reap` interrupts (a restarted single worker's own dead
        generations go as soon as they are stale, with no round of the loop to wait)."""
        return await self.reap()

    async def reap(self) -> list[str]:
        """Interrupt stale generations of dead workers; returns their message ids.

        Stale too, even when Redis says a worker is gone: a presence key can be missing
        while its worker still streams (Redis restarted without persistence, a missed
        refresh). Without Redis to tell who is alive, staleness decides alone, as it
        does for a single process: a live worker heartbeats its generations in the
        database whatever Redis does, and a worker that died while Redis was away
        must not keep its replies `streaming` until Redis is back."""
        try:
            alive = sorted(await self._registry.alive() | {self._registry.worker_id})
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("Redis unreachable, reaping by heartbeat alone: %s", exc)
            alive = []
        return await self._interrupted(
            await self._store.interrupt_orphans(
                exclude_generation_ids=list(self._local()),
                exclude_worker_ids=alive,
                stale_before=self._clock() - self._stale_after,
            )
        )

    async def _interrupted(self, message_ids: list[str]) -> list[str]:
        if message_ids and self._on_interrupted is not None:
            try:
                await self._on_interrupted(message_ids)
            except Exception:  # they are interrupted; only their cleanup failed
                logger.exception("cleaning up after %d interrupted generation(s)", len(message_ids))
        return message_ids

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                reaped = await self.reap()
            except Exception:  # Redis or the database is down: the next round tries
                end_if_cancelled()
                logger.exception("reaping dead workers' generations failed")
                continue
            if reaped:
                logger.warning("interrupted %d generation(s) of dead workers", len(reaped))
