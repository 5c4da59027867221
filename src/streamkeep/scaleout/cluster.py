"""`Cluster`: what one worker needs to share its generations with the others.

The `generation.peers.Peers` of a deployment with Redis: built by the app when
`redis_url` is set and handed to the `GenerationManager`, which then gives each
generation a `RedisEventLog`, stops other workers' generations through
the `ControlBus`, finds them for resuming with `find`, and leaves the recovery of dead
workers' generations to the liveness rules (see `liveness`); the streams of those it
interrupts get the expiry a normal end gives (`expire_streams`), as their own worker
will never close them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.exc import SQLAlchemyError

from streamkeep.scaleout.control import ControlBus, StopHandler
from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.liveness import (
    DEFAULT_REAP_INTERVAL,
    DEFAULT_STALE_AFTER,
    DEFAULT_TTL,
    Reaper,
    WorkerRegistry,
)
from streamkeep.scaleout.redis_log import RedisEventLog, RemoteEventLog
from streamkeep.scaleout.remote import RemoteGeneration
from streamkeep.scaleout.writer import DEFAULT_MAXLEN, RedisWriter
from streamkeep.store.errors import NotFound

if TYPE_CHECKING:
    from streamkeep.config import Settings
    from streamkeep.store.repository import ChatStore

logger = logging.getLogger(__name__)

# How long, and how often, a stop no worker took is asked again (see `Cluster.stop`).
STOP_RETRY_FOR = 1.0
STOP_RETRY_EVERY = 0.1


def connect(url: str) -> aioredis.Redis:
    """The process's Redis client. A command whose pooled connection turns out dead
    (Redis restarted, a proxy cut it) is tried once more on a new one: else, after a
    restart, every connection the pool kept would fail its next command."""
    return aioredis.from_url(url, retry=Retry(NoBackoff(), 1))


class Cluster:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: ChatStore,
        worker_id: str,
        *,
        keys: Keys | None = None,
        expire_after: float = 30.0,
        maxlen: int = DEFAULT_MAXLEN,
        worker_ttl: float = DEFAULT_TTL,
        stale_after: float = DEFAULT_STALE_AFTER,
        reap_interval: float = DEFAULT_REAP_INTERVAL,
        stop_timeout: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keys = keys or Keys()
        self.worker_id = worker_id
        self._store = store
        self._stale_after = stale_after
        self._reap_interval = reap_interval
        self._stop_timeout = stop_timeout
        self._expire_ms = max(int(expire_after * 1000), 1)
        self.writer = RedisWriter(
            redis, maxlen=maxlen, expire_after=expire_after, epoch_key=self.keys.epoch
        )
        self.registry = WorkerRegistry(redis, worker_id, keys=self.keys, ttl=worker_ttl)
        self.bus: ControlBus | None = None
        self.reaper: Reaper | None = None

    @classmethod
    def from_settings(
        cls, redis: aioredis.Redis, store: ChatStore, settings: Settings, worker_id: str
    ) -> Cluster:
        """A finished stream is kept as long as a finished local generation is; dead
        workers are looked for a few times per `worker_stale_after`."""
        stale_after = settings.worker_stale_after
        return cls(
            redis,
            store,
            worker_id,
            keys=Keys(settings.redis_prefix),
            expire_after=settings.replay_window,
            stale_after=stale_after,
            reap_interval=min(DEFAULT_REAP_INTERVAL, stale_after / 3),
        )

    async def start(
        self, *, local_stop: StopHandler, local_generation_ids: Callable[[], Collection[str]]
    ) -> list[str]:
        """Join the cluster; returns the messages of dead workers it interrupted."""
        self.writer.start()
        await self.registry.start()
        self.bus = ControlBus(
            self.redis, keys=self.keys, on_stop=local_stop, stop_timeout=self._stop_timeout
        )
        await self.bus.start()
        self.reaper = Reaper(
            self._store,
            self.registry,
            local_generation_ids=local_generation_ids,
            stale_after=self._stale_after,
            interval=self._reap_interval,
            on_interrupted=self.expire_streams,
        )
        orphans = await self.reaper.recover_at_start()
        self.reaper.start()
        return orphans

    async def aclose(self) -> None:
        """Leave: after the manager's own generations have ended (their last frames
        are flushed here, the bus answered stops until now)."""
        if self.reaper is not None:
            await self.reaper.aclose()
        if self.bus is not None:
            await self.bus.aclose()
        await self.writer.aclose()
        await self.registry.aclose()

    def new_log(
        self,
        generation_id: str,
        chat_id: str,
        message_id: str,
        *,
        resumable: bool = True,
        first_seq: int = 1,
        announce: bool = True,
        traceparent: str | None = None,
    ) -> RedisEventLog:
        """The log of a generation this worker starts, its frames numbered from
        `first_seq`; other workers can find it (and resume it through the chat API when
        `resumable`: it speaks the UI stream) once it is `announce`d; with `announce`
        true, at once."""
        log = RedisEventLog(self.writer, self.keys.generation(generation_id), first_seq=first_seq)
        if announce:
            self.announce(
                generation_id,
                chat_id,
                message_id,
                resumable=resumable,
                first_seq=first_seq,
                traceparent=traceparent,
            )
        return log

    def announce(
        self,
        generation_id: str,
        chat_id: str,
        message_id: str,
        *,
        resumable: bool = True,
        first_seq: int = 1,
        traceparent: str | None = None,
    ) -> None:
        """Point the chat at this generation, for other workers to find. A reply
        announces itself once its rows are written: a start the database refuses must
        not leave the chat pointing at a generation that was never kept. `traceparent`
        (its span's, when traced): what a resume or stop elsewhere links to."""
        fields: dict[str, object] = {
            "generation": generation_id,
            "message": message_id,
            "resumable": resumable,
            "first_seq": first_seq,
        }
        if traceparent is not None:
            fields["traceparent"] = traceparent
        pointer = orjson.dumps(fields)
        self.writer.point(
            self.keys.chat(chat_id), pointer, stream=self.keys.generation(generation_id)
        )

    async def expire_streams(self, message_ids: list[str]) -> None:
        """Give the streams of these interrupted replies (their worker died before
        closing them) the expiry the writer gives a stream at its end.

        A stream is found through its chat's pointer, which names the generation of
        the chat's latest reply (a reply the pointer no longer names was followed by
        another one, which only a live worker can have started after the interrupt)."""
        for message_id in message_ids:
            try:
                chat_id = (await self._store.get_message(message_id)).chat_id
                raw = await self.redis.get(self.keys.chat(chat_id))
                pointer = orjson.loads(raw) if raw is not None else {}
                if pointer.get("message") != message_id:
                    continue
                key = self.keys.generation(pointer["generation"])
                await self.redis.pexpire(key, self._expire_ms)
            except NotFound:
                continue  # its chat was deleted meanwhile
            except (aioredis.RedisError, OSError, ValueError, KeyError) as exc:
                logger.warning("could not expire the stream of message %s: %s", message_id, exc)

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's generation on whichever worker runs it. A stop no worker
        took is asked again for a moment while the database says that generation still
        runs: its owner may be subscribing again (Redis just came back)."""
        running = await self._store.running_generation(chat_id)
        if self.bus is None or running is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_RETRY_FOR
        while not await self.bus.stop(chat_id):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(STOP_RETRY_EVERY)
            still = await self._store.running_generation(chat_id)
            if still is None or still.id != running.id:
                return False  # it ended (or was stopped) first
        return True

    async def traceparent(self, chat_id: str) -> str | None:
        """The traceparent in the chat's pointer (see `announce`), if any."""
        raw = await self.redis.get(self.keys.chat(chat_id))
        value = orjson.loads(raw).get("traceparent") if raw is not None else None
        return value if isinstance(value, str) else None

    async def find(
        self, chat_id: str, *, generation: tuple[str, str] | None = None
    ) -> RemoteGeneration | None:
        """The chat's latest generation as stored in Redis (running, or ended within
        the stream's expiry), or its running one if the pointer is missing.

        `generation` (its id and message id) asks for that one instead, found even
        when the chat's pointer does not name it yet (its owner announces it once its
        rows are written, and a reader may come between the two)."""
        raw = await self.redis.get(self.keys.chat(chat_id))
        pointer = orjson.loads(raw) if raw is not None else None
        # Unknown without the pointer: the reader learns it (see `redis_log`).
        first_seq: int | None = None
        traceparent: str | None = None
        if pointer is not None and (generation is None or pointer["generation"] == generation[0]):
            if not pointer.get("resumable", True) and generation is None:
                return None  # a gateway call's: only a reader that names it may read it
            generation_id, message_id = pointer["generation"], pointer["message"]
            first_seq = int(pointer.get("first_seq", 1))  # older workers numbered from 1
            traceparent = pointer.get("traceparent")
        elif generation is not None:
            generation_id, message_id = generation
        else:
            record = await self._store.running_generation(chat_id)
            if record is None:
                return None
            generation_id, message_id = record.id, record.message_id
        log = await RedisEventLog.open_remote(
            self.redis,
            generation_id,
            keys=self.keys,
            still_running=lambda: self._running(generation_id),
            first_seq=first_seq,
        )
        if log is None:
            if not await self._running(generation_id):
                return None  # ended, and its stream expired
            log = RemoteEventLog(
                self.redis,
                self.keys.generation(generation_id),
                next_seq=first_seq or 1,
                closed=False,
                still_running=lambda: self._running(generation_id),
                first_seq=first_seq,
            )
        return RemoteGeneration(generation_id, chat_id, message_id, log, traceparent=traceparent)

    async def _running(self, generation_id: str) -> bool:
        """Whether it still runs, as the database says. When the database cannot say
        (it is away), it is taken as running: a reader waits on, asking again after
        its next wait, rather than end a stream that may still grow."""
        try:
            return (await self._store.get_generation(generation_id)).status == "running"
        except NotFound:
            return False
        except (SQLAlchemyError, OSError) as exc:
            logger.info("the database cannot say if generation %s runs: %s", generation_id, exc)
            return True
