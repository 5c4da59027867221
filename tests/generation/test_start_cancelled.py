"""A start whose request goes away while its rows are being written (the client left,
the server is stopping the request): the provider's stream is closed, nothing is kept."""

from __future__ import annotations

import asyncio

import pytest

from streamkeep.generation import GenerationManager
from streamkeep.store import ChatStore
from tests.fakes.upstream import FakeUpstream
from tests.generation.conftest import MODEL
from tests.generation.gates import hold
from tests.generation.streams import deltas, read_until


async def test_a_start_cancelled_during_its_write_closes_the_provider_and_stores_nothing(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = (await store.create_chat(model=MODEL)).id
    rows = hold(request, store, "start_reply")
    # A long answer, asked for by this message only (a queued script would be left for
    # the next request if this one never reached the provider).
    long = "[[tokens=1000 delay=0.01]] hi"
    starting = asyncio.create_task(manager.reply(chat_id=chat_id, content=long))
    await rows.wait_entered()  # the provider was asked; the rows are not written yet
    generation = manager.live(chat_id)
    assert generation is not None
    await read_until(generation.subscribe(), deltas(1))  # ...and is answering

    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    async with asyncio.timeout(10):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1  # closed by us, long before its end
    assert manager.live(chat_id) is None
    rows.open()
    assert await store.active_branch(chat_id) == []
    # The chat takes a new reply at once: nothing of the cancelled one is left running.
    gen = await manager.reply(chat_id=chat_id, content="[[tokens=2]] again")
    await gen.wait()
    assert gen.status == "complete"
