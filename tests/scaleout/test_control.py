"""Stop requests between workers, through real Redis pub/sub on two connection pools."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import ControlBus, Keys
from tests.scaleout.waits import eventually

pytestmark = pytest.mark.redis


class Owner:
    """A worker's stop handler: it runs the chats in `chats`."""

    def __init__(self, *chats: str) -> None:
        self.chats = set(chats)
        self.asked: list[str] = []
        self.stopped: list[str] = []

    async def __call__(self, chat_id: str) -> bool:
        self.asked.append(chat_id)
        if chat_id not in self.chats:
            return False
        await asyncio.sleep(0.05)  # like storing the partial answer
        self.chats.discard(chat_id)
        self.stopped.append(chat_id)
        return True


BusFactory = Callable[..., ControlBus]


@pytest.fixture
async def buses(
    redis: aioredis.Redis, other_redis: aioredis.Redis
) -> AsyncIterator[list[ControlBus]]:
    """Buses started by the test, closed before their connection pools are."""
    started: list[ControlBus] = []
    yield started
    for bus in started:
        await bus.aclose()


async def start_bus(
    buses: list[ControlBus], redis: aioredis.Redis, keys: Keys, **kw: object
) -> ControlBus:
    bus = ControlBus(redis, keys=keys, **kw)  # type: ignore[arg-type]
    await bus.start()
    buses.append(bus)
    return bus


async def test_a_stop_from_another_worker_reaches_the_owner(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    owner, bystander = Owner("chat-a"), Owner("chat-b")
    await start_bus(buses, redis, keys, on_stop=owner)
    await start_bus(buses, other_redis, keys, on_stop=bystander)
    asking = await start_bus(buses, other_redis, keys)

    assert await asking.stop("chat-a") is True
    assert owner.stopped == ["chat-a"]
    # Every worker was asked; only the owner acted.
    await eventually(lambda: "chat-a" in bystander.asked)
    assert bystander.stopped == []


async def test_a_stop_nobody_owns_is_false_after_the_timeout(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    owner = Owner("chat-a")
    await start_bus(buses, redis, keys, on_stop=owner)
    asking = await start_bus(buses, other_redis, keys, stop_timeout=0.3)
    assert await asking.stop("chat-z") is False
    assert owner.asked == ["chat-z"] and owner.stopped == []


async def test_publish_counts_the_listening_workers(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    await start_bus(buses, redis, keys, on_stop=Owner())
    await start_bus(buses, other_redis, keys, on_stop=Owner())
    assert await buses[0].publish_stop("chat-a") == 2


async def test_buses_of_other_deployments_do_not_hear_each_other(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    owner = Owner("chat-a")
    await start_bus(buses, redis, Keys(prefix=f"{keys.prefix}other:"), on_stop=owner)
    asking = await start_bus(buses, other_redis, keys, stop_timeout=0.2)
    assert await asking.stop("chat-a") is False
    assert owner.asked == []


async def test_malformed_messages_do_not_stop_the_listener(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    owner = Owner("chat-a")
    await start_bus(buses, redis, keys, on_stop=owner)
    await other_redis.publish(keys.control, b"not json")
    await other_redis.publish(keys.control, b'{"no": "op"}')
    asking = await start_bus(buses, other_redis, keys)
    assert await asking.stop("chat-a") is True


async def test_a_stop_that_finds_the_generation_ended_is_false_at_once(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    """The owner's generation ended just before the stop reached it: every worker that
    heard the stop says no, so the asker answers at once, not after `stop_timeout`."""
    owner = Owner()  # it ran chat-a; that generation has just ended
    await start_bus(buses, redis, keys, on_stop=owner)
    await start_bus(buses, other_redis, keys, on_stop=Owner("chat-b"))
    asking = await start_bus(buses, other_redis, keys, stop_timeout=60.0)
    async with asyncio.timeout(10):  # far below the stop timeout
        assert await asking.stop("chat-a") is False
    assert owner.asked == ["chat-a"]


async def test_a_stop_the_owner_takes_time_over_is_still_true(
    buses: list[ControlBus], redis: aioredis.Redis, other_redis: aioredis.Redis, keys: Keys
) -> None:
    """The bystanders' quick no's do not end the wait while the owner is still storing
    its partial answer."""

    class SlowOwner(Owner):
        async def __call__(self, chat_id: str) -> bool:
            await asyncio.sleep(0.5)
            return await super().__call__(chat_id)

    owner = SlowOwner("chat-a")
    await start_bus(buses, redis, keys, on_stop=owner)
    await start_bus(buses, other_redis, keys, on_stop=Owner())
    asking = await start_bus(buses, other_redis, keys, stop_timeout=60.0)
    assert await asking.stop("chat-a") is True
    assert owner.stopped == ["chat-a"]
