"""A same-key retry that comes after its generation ended: it is answered with that
generation's reply, never refused for another one."""

from __future__ import annotations

import asyncio

import pytest

from streamkeep.generation import GenerationManager
from streamkeep.store import ChatStore, GenerationConflict
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, ManagerFactory
from tests.generation.streams import deltas, read_all, read_until


async def new_chat(store: ChatStore) -> str:
    return (await store.create_chat(model=MODEL)).id


async def forgotten(manager: GenerationManager, chat_id: str) -> None:
    await asyncio.sleep(0.01)  # lets the (zero-delay) retention timer fire
    assert manager.live(chat_id) is None


async def test_a_retry_after_retention_names_the_finished_reply(
    manager_factory: ManagerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with manager_factory(replay_window=0.0) as manager:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=3))
        first = await manager.reply(chat_id=chat_id, content="hi", idempotency_key="k")
        await read_all(first)
        await forgotten(manager, chat_id)

        with pytest.raises(GenerationConflict) as caught:
            await manager.reply(chat_id=chat_id, content="hi", idempotency_key="k")

        conflict = caught.value
        assert conflict.same_key and not conflict.running
        assert (conflict.generation_id, conflict.message_id) == (first.id, first.message_id)
        branch = await store.active_branch(chat_id)
        assert [m.id for m in branch][-1] == first.message_id  # nothing new stored


async def test_a_retry_while_another_generation_runs_names_its_own_finished_reply(
    manager_factory: ManagerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with manager_factory(replay_window=0.0) as manager:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=3))
        first = await manager.reply(chat_id=chat_id, content="one", idempotency_key="k1")
        await read_all(first)
        await forgotten(manager, chat_id)
        fake_upstream.enqueue(Script(tokens=10, hang_after=2))
        running = await manager.reply(chat_id=chat_id, content="two", idempotency_key="k2")
        await read_until(running.subscribe(), deltas(2))

        with pytest.raises(GenerationConflict) as caught:
            await manager.reply(chat_id=chat_id, content="one", idempotency_key="k1")

        conflict = caught.value
        assert conflict.same_key and not conflict.running
        assert conflict.message_id == first.message_id  # not the running one's
        assert len(fake_upstream.requests) == 2  # the provider was not asked again
        await manager.stop(chat_id)


async def test_a_retry_within_retention_while_another_runs_replays_its_own(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=3))
    first = await manager.reply(chat_id=chat_id, content="one", idempotency_key="k1")
    replay = await read_all(first)
    fake_upstream.enqueue(Script(tokens=10, hang_after=2))
    running = await manager.reply(chat_id=chat_id, content="two", idempotency_key="k2")
    await read_until(running.subscribe(), deltas(2))  # its request reached the provider

    again = await manager.reply(chat_id=chat_id, content="one", idempotency_key="k1")

    assert again is first and await read_all(again) == replay
    assert len(fake_upstream.requests) == 2
    assert manager.live(chat_id) is running
    await manager.stop(chat_id)
