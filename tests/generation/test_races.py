"""Stops and shutdowns racing a generation's start or end, ordered deterministically by
holding a real store call (see `gates`) at the moment the race is about."""

from __future__ import annotations

import asyncio

import pytest

from streamkeep.generation import GenerationManager, ShuttingDown
from streamkeep.store import ChatStore, GenerationConflict
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, ManagerFactory
from tests.generation.gates import hold
from tests.generation.streams import deltas, read_all, read_until, stored_text


async def new_chat(store: ChatStore) -> str:
    return (await store.create_chat(model=MODEL)).id


async def test_a_start_in_flight_when_shutdown_begins_is_refused(
    manager_factory: ManagerFactory,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    async with manager_factory() as manager:
        reads = hold(request, store, "get_chat")  # the start's first read
        starting = asyncio.create_task(manager.reply(chat_id=chat_id, content="hi"))
        await reads.wait_entered()  # past the check at the top of `reply`

        await manager.shutdown()  # nothing is registered yet: nothing to wait for
        reads.open()

        with pytest.raises(ShuttingDown):
            await starting
        assert manager.live(chat_id) is None
        assert fake_upstream.requests == []  # the provider was never asked
        assert await store.active_branch(chat_id) == []


async def test_a_stop_racing_the_final_write_of_a_completed_answer_is_false(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    final_write = hold(request, store, "finish_reply")
    fake_upstream.enqueue(Script(tokens=3))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await final_write.wait_entered()  # the provider finished; `complete` is being written

    stopping = asyncio.create_task(manager.stop(chat_id))
    await asyncio.sleep(0)  # the stop reaches the generation and waits for its end
    assert not stopping.done()
    final_write.open()

    assert await stopping is False
    assert gen.status == "complete"
    assert (await store.get_message(gen.message_id)).status == "complete"


async def test_a_stop_racing_a_start_the_database_refuses_is_false(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    write = store.start_reply  # the real one, for the other worker below
    rows = hold(request, store, "start_reply")
    fake_upstream.enqueue(Script(tokens=1000, delay=0.01))
    starting = asyncio.create_task(manager.reply(chat_id=chat_id, content="here"))
    await rows.wait_entered()  # launched (the provider is asked), rows not written yet
    # Meanwhile another worker starts a generation in this chat: our write will fail.
    await write(chat_id=chat_id, parent_id=None, user_content="elsewhere", model=MODEL)

    stopping = asyncio.create_task(manager.stop(chat_id))
    await asyncio.sleep(0)
    rows.open()

    with pytest.raises(GenerationConflict):
        await starting
    assert await stopping is False  # discarded, not stopped: there is no reply of ours
    branch = await store.active_branch(chat_id)
    assert [m.parts for m in branch if m.role == "user"] == [
        [{"type": "text", "text": "elsewhere"}]
    ]


async def test_a_stop_racing_a_start_that_succeeds_is_true_and_stored_stopped(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    rows = hold(request, store, "start_reply")
    fake_upstream.enqueue(Script(tokens=1000, delay=0.01))
    starting = asyncio.create_task(manager.reply(chat_id=chat_id, content="hi"))
    await rows.wait_entered()

    stopping = asyncio.create_task(manager.stop(chat_id))
    await asyncio.sleep(0)
    rows.open()

    gen = await starting
    assert await stopping is True
    assert gen.status == "stopped"
    assert (await store.get_message(gen.message_id)).status == "stopped"


async def test_of_two_concurrent_stops_only_the_one_that_stopped_it_is_true(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=10, hang_after=2))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await read_until(gen.subscribe(), deltas(2))

    results = await asyncio.gather(manager.stop(chat_id), manager.stop(chat_id))

    assert sorted(results) == [False, True]
    assert await manager.stop(chat_id) is False  # and once it has ended, always False
    message = await store.get_message(gen.message_id)
    assert message.status == "stopped" and stored_text(message.parts) == "lorem ipsum"
    assert (await read_all(gen))[-1].type == "[DONE]"
