"""`ControlBus`: stop requests between workers, over one Redis pub/sub channel.

Any worker may be asked to stop a chat's generation; only the worker running it can. The
asking worker publishes `{"op": "stop", "chat": ..., "req": ...}`; every worker's
listener hands the chat id to its `on_stop` callback (the manager's local stop), and the
one that stopped it answers `{"op": "stopped", "req": ...}` once the partial answer is
stored, so `stop()` returns True with the same meaning as a local stop.

Pub/sub delivers only to workers connected at that moment, which is what a stop needs:
a generation's owner is, by definition, alive and subscribed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# chat id -> True when this worker ran that chat's generation and has stopped it
StopHandler = Callable[[str], Awaitable[bool]]

_LISTEN_TIMEOUT = 1.0
_MAX_BACKOFF = 2.0


class ControlBus:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keys | None = None,
        on_stop: StopHandler | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self._redis = redis
        self._channel = (keys or Keys()).control
        self._on_stop = on_stop
        self._stop_timeout = stop_timeout
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._subscribed = False

    async def start(self) -> None:
        """Subscribe (confirmed before this returns, if Redis answers), then listen."""
        try:
            await self._subscribe()
        except (aioredis.RedisError, OSError) as exc:
            logger.error("Redis unreachable at start, subscribing later: %s", exc)
        self._task = asyncio.create_task(self._listen(), name="control-bus")

    async def _subscribe(self) -> None:
        await self._pubsub.subscribe(self._channel)
        await self._pubsub.get_message(timeout=_LISTEN_TIMEOUT)  # the confirmation
        self._subscribed = True

    async def aclose(self) -> None:
        self._closing = True  # redis-py may turn the cancel into a connection error
        for task in [self._task, *self._handlers]:
            await cancel_and_wait(task)
        self._task = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- asking --------------------------------------------------------------------

    async def publish_stop(self, chat_id: str, request_id: str = "") -> int:
        """Ask every worker to stop `chat_id`'s generation; returns how many listen."""
        return await self._publish({"op": "stop", "chat": chat_id, "req": request_id})

    async def stop(self, chat_id: str) -> bool:
        """Stop `chat_id`'s generation wherever it runs; True once its owner has,
        False if no worker has within `stop_timeout`."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.publish_stop(chat_id, request_id)
            async with asyncio.timeout(self._stop_timeout):
                return await future
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(request_id, None)

    async def _publish(self, message: dict[str, Any]) -> int:
        return await self._redis.publish(self._channel, orjson.dumps(message))

    # -- listening -----------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self._subscribed:
                    await self._subscribe()
                message = await self._pubsub.get_message(timeout=_LISTEN_TIMEOUT)
                backoff = 0.05
            except (aioredis.RedisError, OSError) as exc:
                if self._closing:
                    return
                # The next get_message reconnects and subscribes again.
                logger.warning("control bus connection lost, reconnecting: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if message is not None and message.get("type") == "message":
                self._dispatch(message["data"])

    def _dispatch(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            op, request_id = message["op"], str(message.get("req", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("ignoring a malformed control message: %r", data[:200])
            return
        if op == "stop" and self._on_stop is not None:
            # In a task of its own: a stop waits for the answer to be stored, and the
            # listener must keep taking messages meanwhile.
            task = asyncio.create_task(self._handle_stop(str(message["chat"]), request_id))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif op == "stopped":
            future = self._waiting.get(request_id)
            if future is not None and not future.done():
                future.set_result(True)

    async def _handle_stop(self, chat_id: str, request_id: str) -> None:
        assert self._on_stop is not None
        try:
            stopped = await self._on_stop(chat_id)
            if stopped and request_id:
                await self._publish({"op": "stopped", "chat": chat_id, "req": request_id})
        except Exception:
            logger.exception("stopping chat %s for another worker failed", chat_id)
