"""Starting, joining, refusing, recovering and shutting down generations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from streamkeep.generation import GenerationManager, ShuttingDown
from streamkeep.llm.errors import UnknownModelError
from streamkeep.store import ChatStore, Database, GenerationConflict, InvalidOperation
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, ManagerFactory
from tests.generation.streams import deltas, read_all, read_until, stored_text


async def new_chat(store: ChatStore) -> str:
    return (await store.create_chat(model=MODEL)).id


async def test_a_retry_with_the_same_idempotency_key_joins_the_running_generation(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=6, hang_after=2))
    first = await manager.reply(chat_id=chat_id, content="hi", idempotency_key="k1")
    again = await manager.reply(chat_id=chat_id, content="hi", idempotency_key="k1")

    assert again is first
    await read_until(first.subscribe(), deltas(2))
    assert len(fake_upstream.requests) == 1
    await manager.stop(chat_id)
    branch = await store.active_branch(chat_id)
    assert [m.role for m in branch] == ["user", "assistant"]


async def test_a_second_generation_in_the_same_chat_is_a_conflict_and_writes_nothing(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=6, hang_after=2))
    running = await manager.reply(chat_id=chat_id, content="one", idempotency_key="a")
    await read_until(running.subscribe(), deltas(2))  # its request reached the provider

    with pytest.raises(GenerationConflict) as caught:
        await manager.reply(chat_id=chat_id, content="two", idempotency_key="b")

    assert caught.value.generation_id == running.id and not caught.value.same_key
    assert manager.live(chat_id) is running
    await manager.stop(chat_id)
    branch = await store.active_branch(chat_id)
    assert [m.parts for m in branch if m.role == "user"] == [[{"type": "text", "text": "one"}]]
    assert len(fake_upstream.requests) == 1


async def test_an_unknown_model_changes_nothing(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    with pytest.raises(UnknownModelError):
        await manager.reply(chat_id=chat_id, content="hi", model="fake/nope")
    chat = await store.get_chat(chat_id)
    assert chat.active_leaf_id is None
    assert await store.active_branch(chat_id) == []
    assert manager.live(chat_id) is None and fake_upstream.requests == []


async def test_a_reply_continues_the_active_branch_with_its_history(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(text="first answer"))
    await read_all(await manager.reply(chat_id=chat_id, content="first"))
    fake_upstream.enqueue(Script(text="second answer"))
    gen = await manager.reply(chat_id=chat_id, content="second")
    await read_all(gen)

    sent = [(m["role"], m["content"]) for m in fake_upstream.requests[-1]["messages"]]
    assert sent == [
        ("user", "first"),
        ("assistant", "first answer"),
        ("user", "second"),
    ]
    branch = await store.active_branch(chat_id)
    assert [m.id for m in branch][-1] == gen.message_id


async def test_regenerate_and_edit_add_siblings(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(text="one"))
    first = await manager.reply(chat_id=chat_id, content="question")
    await read_all(first)
    assert first.user_message_id is not None

    fake_upstream.enqueue(Script(text="two"))
    again = await manager.regenerate(first.message_id)
    await read_all(again)
    assert again.user_message_id is None
    regenerated = await store.get_message(again.message_id)
    assert regenerated.parent_id == first.user_message_id
    assert stored_text(regenerated.parts) == "two"
    sent = [(m["role"], m["content"]) for m in fake_upstream.requests[-1]["messages"]]
    assert sent == [("user", "question")]

    fake_upstream.enqueue(Script(text="three"))
    edited = await manager.edit(first.user_message_id, "better question")
    await read_all(edited)
    assert edited.user_message_id is not None
    new_user = await store.get_message(edited.user_message_id)
    old_user = await store.get_message(first.user_message_id)
    assert new_user.parent_id == old_user.parent_id and new_user.id != old_user.id
    sent = [(m["role"], m["content"]) for m in fake_upstream.requests[-1]["messages"]]
    assert sent == [("user", "better question")]
    branch = await store.active_branch(chat_id)
    assert [m.id for m in branch] == [new_user.id, edited.message_id]

    with pytest.raises(InvalidOperation):
        await manager.edit(edited.message_id, "assistants cannot be edited")


async def test_start_marks_orphans_interrupted_with_the_last_checkpoint(
    manager_factory: ManagerFactory, store: ChatStore
) -> None:
    # What a process that died mid-generation leaves behind: a running generation
    # and its streaming message holding the last checkpoint.
    chat_id = await new_chat(store)
    _, reply, _ = await store.start_reply(
        chat_id=chat_id, parent_id=None, user_content="hi", model=MODEL, worker_id="dead"
    )
    saved = [{"type": "text", "text": "partial answ"}]
    await store.checkpoint([(reply.id, saved)])

    async with manager_factory(worker_stale_after=0):  # its heartbeat is already stale
        message = await store.get_message(reply.id)
        assert message.status == "interrupted" and message.parts == saved
        assert await store.running_generation(chat_id) is None


async def test_at_start_only_silent_generations_are_orphans(
    manager_factory: ManagerFactory, store: ChatStore, db: Database
) -> None:
    # Another live process may share the database (a second `serve`, `chat --local`):
    # its generations heartbeat, and must be left alone.
    yesterday = ChatStore(db, clock=lambda: datetime.now(UTC) - timedelta(days=1))
    _, dead, _ = await yesterday.start_reply(
        chat_id=await new_chat(store), parent_id=None, user_content="hi", model=MODEL
    )
    _, alive, _ = await store.start_reply(
        chat_id=await new_chat(store), parent_id=None, user_content="hi", model=MODEL
    )

    async with manager_factory():
        assert (await store.get_message(dead.id)).status == "interrupted"
        assert (await store.get_message(alive.id)).status == "streaming"


async def test_a_generation_that_goes_silent_after_start_is_swept(
    manager_factory: ManagerFactory, store: ChatStore, db: Database
) -> None:
    # A crash just before this start: the orphan's heartbeat is still fresh at start.
    soon = ChatStore(db, clock=lambda: datetime.now(UTC) + timedelta(seconds=1))
    _, orphan, _ = await soon.start_reply(
        chat_id=await new_chat(store), parent_id=None, user_content="hi", model=MODEL
    )
    async with manager_factory(worker_stale_after=0.3, checkpoint_interval=0.1):
        assert (await store.get_message(orphan.id)).status == "streaming"
        for _ in range(200):  # a bounded wait for the sweep (the database is polled)
            if (await store.get_message(orphan.id)).status != "streaming":
                break
            await asyncio.sleep(0.05)
        assert (await store.get_message(orphan.id)).status == "interrupted"


async def test_shutdown_lets_short_generations_finish_and_interrupts_long_ones(
    manager_factory: ManagerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with manager_factory(shutdown_grace=2.0) as manager:
        short_chat, long_chat = await new_chat(store), await new_chat(store)
        fake_upstream.enqueue(Script(tokens=4, delay=0.05))
        short = await manager.reply(chat_id=short_chat, content="hi")
        fake_upstream.enqueue(Script(tokens=10, hang_after=2))
        long = await manager.reply(chat_id=long_chat, content="hi")
        await read_until(long.subscribe(), deltas(2))
        assert not short.done.is_set()

        shutting = asyncio.create_task(manager.shutdown())
        await asyncio.sleep(0)
        with pytest.raises(ShuttingDown):
            await manager.reply(chat_id=await new_chat(store), content="too late")
        await shutting

        done_short = await store.get_message(short.message_id)
        assert done_short.status == "complete"
        assert len(stored_text(done_short.parts).split()) == 4
        cut = await store.get_message(long.message_id)
        assert cut.status == "interrupted"
        assert stored_text(cut.parts) == "lorem ipsum"
        frames = await read_all(long)
        assert [f.type for f in frames][-3:] == ["abort", "finish", "[DONE]"]


async def test_a_finished_generation_is_kept_for_late_subscribers_then_dropped(
    manager_factory: ManagerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with manager_factory(replay_window=0.0) as manager:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=2))
        gen = await manager.reply(chat_id=chat_id, content="hi")
        assert manager.live(chat_id) is gen and manager.get(gen.id) is gen
        late = await read_all(gen)  # a subscriber arriving after the end still replays
        assert late[-1].type == "[DONE]"
        await asyncio.sleep(0.01)  # lets the (zero-delay) retention timer fire
        assert manager.live(chat_id) is None and manager.get(gen.id) is None


async def test_concurrent_requests_with_one_idempotency_key_share_one_generation(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=3))
    one, two = await asyncio.gather(
        manager.reply(chat_id=chat_id, content="hi", idempotency_key="same"),
        manager.reply(chat_id=chat_id, content="hi", idempotency_key="same"),
    )
    assert one is two
    assert await read_all(one) == await read_all(two)
    assert len(fake_upstream.requests) == 1


async def test_a_stop_before_the_first_token_stores_an_empty_stopped_reply(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(hang_before_first_byte=30))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await gen.stop()  # the model is still thinking: no token has come

    frames = await read_all(gen)
    assert [f.type for f in frames] == [
        "start",
        "start-step",
        "finish-step",
        "message-metadata",
        "abort",
        "finish",
        "[DONE]",
    ]
    message = await store.get_message(gen.message_id)
    assert message.status == "stopped" and message.parts == []
    async with asyncio.timeout(10):  # no request is left running at the provider
        await fake_upstream.wait_idle()
    assert fake_upstream.open_streams == 0


async def test_a_start_refused_by_the_database_closes_the_provider_stream_and_stores_nothing(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    # The provider is asked before the rows are written; here another worker's running
    # generation (which this process cannot know of) makes the write fail.
    chat_id = await new_chat(store)
    await store.start_reply(
        chat_id=chat_id, parent_id=None, user_content="elsewhere", model=MODEL, worker_id="w2"
    )
    fake_upstream.enqueue(Script(tokens=1000, delay=0.01))

    with pytest.raises(GenerationConflict):
        await manager.reply(chat_id=chat_id, content="here")

    async with asyncio.timeout(10):
        await fake_upstream.wait_idle()
    assert fake_upstream.open_streams == 0
    assert manager.live(chat_id) is None
    branch = await store.active_branch(chat_id)
    assert [m.parts for m in branch if m.role == "user"] == [
        [{"type": "text", "text": "elsewhere"}]
    ]
