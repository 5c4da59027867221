"""`ControlBus`: stop requests between workers, over one Redis pub/sub channel.

Any worker may be asked to stop a chat's generation; only the worker running it can. The
asking worker publishes `{"op": "stop", "chat": ..., "req": ...}`; every worker's
listener hands the chat id to its `on_stop` callback (the manager's local stop), and
answers: the one that stopped it `{"op": "stopped", "req": ...}` once the partial answer
is stored, so `stop()` returns True with the same meaning as a local stop; every other
one `{"op": "not-stopped", "req": ...}` (its own answer, or one without an `on_stop`).
PUBLISH tells the asker how many workers heard it, so it returns False as soon as all of
them said no (a generation that ended before the stop reached it), never waiting for an
acknowledgement that will not come; `stop_timeout` only bounds a worker that heard the
stop and never answered (it died meanwhile).

Pub/sub delivers only to workers connected at that moment, which is what a stop needs:
a generation's owner is, by definition, alive and subscribed. After Redis went away, a
bus subscribes again within `_MAX_BACKOFF` of its return; a stop asked meanwhile first
waits (briefly) for its own subscription, on which the answers come, and the cluster
asks again while the database says the generation still runs (its owner may not be
back yet).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from streamkeep.scaleout.keys import Keys
from streamkeep.scaleout.tasks import cancel_and_wait, end_if_cancelled

logger = logging.getLogger(__name__)

# chat id -> True when this worker ran that chat's generation and has stopped it
StopHandler = Callable[[str], Awaitable[bool]]

_LISTEN_TIMEOUT = 1.0
# A lost subscription is tried again at least this often: stops sent meanwhile are lost.
_MAX_BACKOFF = 0.25
# How long a stop waits for this bus's own subscription (its answers come on it).
_RESUBSCRIBE_WAIT = 1.0


@dataclass(slots=True)
class _Asked:
    """The answers to one stop request so far."""

    result: asyncio.Future[bool]
    answers: int = 0
    listeners: int | None = None  # how many workers heard it, once PUBLISH returned

    def answer(self, stopped: bool) -> None:
        if self.result.done():
            return
        self.answers += 1
        if stopped:
            self.result.set_result(True)
        else:
            self._check()

    def heard_by(self, listeners: int) -> None:
        self.listeners = listeners
        self._check()

    def _check(self) -> None:
        heard = self.listeners
        if heard is not None and self.answers >= heard and not self.result.done():
            self.result.set_result(False)  # all of them said no


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
        self._waiting: dict[str, _Asked] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._subscribed = False
        self._listening = asyncio.Event()  # subscribed, and its connection working

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
        self._listening.set()

    async def aclose(self) -> None:
        self._closing = True  # redis-py may turn the cancel into a connection error
        for task in [self._task, *self._handlers]:
            await cancel_and_wait(task)
        self._task = None
        for asked in self._waiting.values():
            asked.result.cancel()
        self._waiting.clear()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    # -- asking --------------------------------------------------------------------

    async def publish_stop(self, chat_id: str, request_id: str = "") -> int:
        """Ask every worker to stop `chat_id`'s generation; returns how many listen."""
        return await self._publish({"op": "stop", "chat": chat_id, "req": request_id})

    async def stop(self, chat_id: str) -> bool:
        """Stop `chat_id`'s generation wherever it runs; True once its owner has,
        False once every worker that heard the request said it did not (or, when one
        never answers, after `stop_timeout`)."""
        await self._until_listening()
        request_id = uuid.uuid4().hex
        asked = _Asked(asyncio.get_running_loop().create_future())
        self._waiting[request_id] = asked  # before publishing: answers can come first
        try:
            asked.heard_by(await self.publish_stop(chat_id, request_id))
            async with asyncio.timeout(self._stop_timeout):
                return await asked.result
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(request_id, None)

    async def _until_listening(self) -> None:
        """Wait a moment for this bus's subscription, should it be down (Redis just
        came back); raise ConnectionError if it is not back by then."""
        if self._listening.is_set():
            return
        try:
            async with asyncio.timeout(_RESUBSCRIBE_WAIT):
                await self._listening.wait()
        except TimeoutError:
            raise aioredis.ConnectionError("not subscribed to the control channel") from None

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
                end_if_cancelled()
                if self._closing:
                    return
                # The next get_message reconnects and subscribes again.
                if self._listening.is_set():
                    logger.warning("control bus connection lost, reconnecting: %s", exc)
                    self._listening.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if not self._listening.is_set():
                logger.warning("control bus subscribed again")
                self._listening.set()
            if message is not None and message.get("type") == "message":
                self._dispatch(message["data"])

    def _dispatch(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            op, request_id = message["op"], str(message.get("req", ""))
            chat_id = message.get("chat")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("ignoring a malformed control message: %r", data[:200])
            return
        if op == "stop":
            if not isinstance(chat_id, str):
                logger.warning("ignoring a stop without a chat: %r", data[:200])
                return
            # In a task of its own: a stop waits for the answer to be stored, and the
            # listener must keep taking messages meanwhile.
            task = asyncio.create_task(self._handle_stop(chat_id, request_id))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif op in ("stopped", "not-stopped"):
            asked = self._waiting.get(request_id)
            if asked is not None:
                asked.answer(op == "stopped")

    async def _handle_stop(self, chat_id: str, request_id: str) -> None:
        stopped = False
        if self._on_stop is not None:
            try:
                stopped = await self._on_stop(chat_id)
            except Exception:
                logger.exception("stopping chat %s for another worker failed", chat_id)
        if not request_id:
            return  # nobody waits for an answer
        # Always answer: the asker counts the answers of every worker that heard it.
        op = "stopped" if stopped else "not-stopped"
        try:
            await self._publish({"op": op, "chat": chat_id, "req": request_id})
        except (aioredis.RedisError, OSError) as exc:
            logger.warning("could not answer a stop of chat %s: %s", chat_id, exc)
