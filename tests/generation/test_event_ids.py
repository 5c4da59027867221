"""Event ids count on across a chat's generations, so a Last-Event-ID names one frame of
one generation: a client holding an id of an earlier reply is replayed the live one
from its start (not from that id, which would skip its first frames), even after a
generation whose worker died mid-stream."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from streamkeep.generation import GenerationManager, generation, manager
from streamkeep.generation.ui_stream import MAX_END_FRAMES, UIStreamEncoder
from streamkeep.llm.events import TextDelta
from streamkeep.store import ChatStore
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, ManagerFactory
from tests.generation.gates import hold
from tests.generation.streams import Frame, deltas, read_all, read_until, types
from tests.scaleout.waits import eventually


async def new_chat(store: ChatStore) -> str:
    return (await store.create_chat(model=MODEL)).id


def seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in frames]


def contiguous(frames: list[Frame]) -> bool:
    return seqs(frames) == list(range(frames[0].seq, frames[0].seq + len(frames)))


async def test_a_chats_replies_number_their_events_on_from_one_another(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    runs: list[list[Frame]] = []
    fake_upstream.enqueue(Script(tokens=5))
    first = await manager.reply(chat_id=chat_id, content="hi")
    runs.append(await read_all(first))
    fake_upstream.enqueue(Script(tokens=5))
    runs.append(await read_all(await manager.regenerate(first.message_id)))
    assert first.user_message_id is not None
    fake_upstream.enqueue(Script(tokens=5))
    runs.append(await read_all(await manager.edit(first.user_message_id, "hello")))

    assert runs[0][0].seq == 1  # a new chat starts where every reply used to
    for run in runs:
        assert types(run)[0] == "start" and types(run)[-1] == "[DONE]" and contiguous(run)
    for earlier, later in itertools.pairwise(runs):
        assert later[0].seq > earlier[-1].seq
    # The chat records how far its ids went: exactly the end, give or take the
    # closing frames it counts before they are sent.
    event_seq = (await store.get_chat(chat_id)).event_seq
    assert runs[-1][-1].seq <= event_seq <= runs[-1][-1].seq + MAX_END_FRAMES


async def test_reading_after_an_earlier_replys_id_replays_the_live_one_from_its_start(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=60))
    old = await read_all(await manager.reply(chat_id=chat_id, content="one"))
    last_seen = old[40].seq  # a client left the first reply here

    fake_upstream.enqueue(Script(tokens=60, hang_after=45))
    live = await manager.reply(chat_id=chat_id, content="two")
    sent = await read_until(live.subscribe(), deltas(45))
    assert len(sent) > last_seen  # the live reply is past that id's count already

    resumed = await read_until(live.subscribe(last_seen), lambda f: len(f) >= len(sent))
    assert resumed[: len(sent)] == sent  # from its `start`: nothing lost, nothing twice
    assert resumed[0].type == "start" and resumed[0].data["messageId"] == live.message_id
    assert old[-1].seq < resumed[0].seq <= old[-1].seq + 1 + MAX_END_FRAMES
    # An id of the live reply itself still resumes right after it.
    after = await read_until(live.subscribe(sent[10].seq), lambda f: len(f) >= len(sent) - 11)
    assert after[0].seq == sent[11].seq
    await live.stop()


async def test_the_next_reply_numbers_above_every_id_a_dead_workers_reply_could_send(
    manager_factory: ManagerFactory,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small margin, so a short reply outruns what its start reserved and the
    # checkpoint has to raise the chat's event_seq.
    margin = 20
    monkeypatch.setattr(generation, "EVENT_SEQ_MARGIN", margin)
    monkeypatch.setattr(manager, "EVENT_SEQ_MARGIN", margin)
    chat_id = await new_chat(store)
    async with manager_factory() as dead, manager_factory() as survivor:
        fake_upstream.enqueue(Script(tokens=200, hang_after=40))
        crashed = await dead.reply(chat_id=chat_id, content="long")
        await read_until(crashed.subscribe(), deltas(40))
        assert (await store.get_chat(chat_id)).event_seq == margin  # reserved by its start
        await dead.checkpointer.tick()  # one transaction: its parts, and ids ahead of it
        sent = crashed.log.next_seq - 1
        assert sent > margin
        reserved = (await store.get_chat(chat_id)).event_seq
        assert reserved >= sent + margin // 2
        message = await store.get_message(crashed.message_id)
        assert message.status == "streaming" and message.parts

        # Its worker "dies": the survivor finds the generation silent and ends it
        # (the process keeps streaming, as a dead one's clients may have kept frames).
        assert await store.interrupt_orphans(exclude_generation_ids=[]) == [crashed.message_id]
        fake_upstream.enqueue(Script(tokens=3))
        nxt = await survivor.reply(chat_id=chat_id, content="again")
        frames = await read_all(nxt)
        assert frames[0].seq == reserved + 1 > sent
        assert contiguous(frames) and types(frames)[-1] == "[DONE]"
        # A client of the dead reply resuming now gets this one whole.
        assert await read_all(nxt, after=sent) == frames
        after_next = (await store.get_chat(chat_id)).event_seq
        assert after_next >= frames[-1].seq
    # The dead reply's late final write (its process shutting down) never lowers it.
    assert (await store.get_message(crashed.message_id)).status == "interrupted"
    assert (await store.get_chat(chat_id)).event_seq == after_next


async def test_a_reply_whose_ids_were_taken_meanwhile_starts_again_after_them(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    writes = hold(request, store, "start_reply")
    fake_upstream.enqueue(Script(tokens=3))
    fake_upstream.enqueue(Script(tokens=3))
    starting = asyncio.create_task(manager.reply(chat_id=chat_id, content="hi"))
    await writes.wait_entered()  # numbered from 1, its rows not written yet
    await eventually(lambda: len(fake_upstream.requests) == 1)  # the provider was asked
    # Meanwhile another worker's reply in this chat started and ended, up to id 50.
    await store.checkpoint([], [(chat_id, 50)])
    writes.open()
    gen = await asyncio.wait_for(starting, 20)
    frames = await read_all(gen)
    assert frames[0].seq == 51 and contiguous(frames)
    assert writes.calls == 2 and len(fake_upstream.requests) == 2  # asked again
    assert [m.role for m in await store.active_branch(chat_id)] == ["user", "assistant"]


def test_max_end_frames_bounds_the_closing_frames() -> None:
    encoder = UIStreamEncoder()
    encoder.encode(TextDelta("open block"))
    end = encoder.end({"status": "stopped"}, "stop", aborted=True)
    assert len(end) == MAX_END_FRAMES
