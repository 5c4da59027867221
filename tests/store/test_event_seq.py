"""`chats.event_seq`: how far a chat's stream event ids went, so that each generation of
the chat numbers its frames after every id an earlier one may have sent."""

from __future__ import annotations

from typing import Any

import pytest

from streamkeep.store import ChatStore, Database, EventSeqMoved, InvalidOperation
from tests.store.test_repository_replies import StatementLog

TEXT = [{"type": "text", "text": "Hello"}]


async def event_seq(store: ChatStore, chat_id: str) -> int:
    return (await store.get_chat(chat_id)).event_seq


def final(gen_id: str, message_id: str, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "generation_id": gen_id,
        "message_id": message_id,
        "status": "complete",
        "parts": TEXT,
        "usage": None,
        "finish_reason": "stop",
        "error": None,
    }
    return args | overrides


async def test_a_new_chat_starts_at_zero_and_the_api_record_keeps_it_to_itself(
    store: ChatStore,
) -> None:
    chat = await store.create_chat(model="m")
    assert chat.event_seq == 0 and await event_seq(store, chat.id) == 0
    assert "event_seq" not in chat.model_dump(mode="json")
    (listed,), _ = await store.list_chats()
    assert listed.event_seq == 0


async def test_a_start_reserves_ids_and_its_final_write_makes_them_exact(
    store: ChatStore,
) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id,
        parent_id=None,
        user_content="hi",
        model="m",
        first_seq=1,
        reserve_seq=10_000,
    )
    assert await event_seq(store, chat.id) == 10_000
    await store.finish_reply(**final(gen.id, reply.id, event_seq=42))
    assert await event_seq(store, chat.id) == 42  # the chat's latest reply ended there

    # Without ids (the gateway's replies are not resumable): the column is left alone.
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=reply.id, user_content="more", model="m"
    )
    await store.finish_reply(**final(gen.id, reply.id))
    assert await event_seq(store, chat.id) == 42


async def test_a_start_after_ids_taken_meanwhile_writes_nothing(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    _, reply, gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="a", model="m", first_seq=1, reserve_seq=9
    )
    await store.finish_reply(**final(gen.id, reply.id, event_seq=7))
    # A reply that read event_seq 0 (before the one above started) comes too late.
    with pytest.raises(EventSeqMoved) as caught:
        await store.start_reply(
            chat_id=chat.id, parent_id=reply.id, user_content="b", model="m", first_seq=5
        )
    assert caught.value.event_seq == 7 and caught.value.chat_id == chat.id
    branch = await store.active_branch(chat.id)
    assert [m.id for m in branch][-1] == reply.id  # nothing of it was written
    assert await store.running_generation(chat.id) is None
    # Numbered after what it was told, it goes in.
    await store.start_reply(
        chat_id=chat.id, parent_id=reply.id, user_content="b", model="m", first_seq=8
    )
    assert await event_seq(store, chat.id) == 7
    with pytest.raises(InvalidOperation):
        await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="c", model="m", first_seq=0
        )


async def test_a_late_final_write_of_an_interrupted_reply_never_lowers_it(
    store: ChatStore,
) -> None:
    chat = await store.create_chat(model="m")
    _, dead, dead_gen = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="a", model="m", first_seq=1, reserve_seq=100
    )
    assert await store.interrupt_orphans() == [dead.id]  # its worker went silent
    _, live, _ = await store.start_reply(
        chat_id=chat.id,
        parent_id=dead.id,
        user_content="b",
        model="m",
        first_seq=101,
        reserve_seq=200,
    )
    # The dead worker was only slow: its final write lands now, ids up to 150.
    await store.finish_reply(**final(dead_gen.id, dead.id, status="interrupted", event_seq=150))
    assert await event_seq(store, chat.id) == 200  # the live reply's reserve stands
    await store.finish_reply(**final(dead_gen.id, dead.id, status="interrupted", event_seq=250))
    assert await event_seq(store, chat.id) == 250  # raised, never lowered
    assert (await store.get_message(live.id)).status == "streaming"


async def test_checkpoints_raise_event_seqs_in_the_same_transaction(
    store: ChatStore, db: Database
) -> None:
    chats, replies = [], []
    for n in range(2):
        chat = await store.create_chat(model="m")
        _, reply, _ = await store.start_reply(
            chat_id=chat.id,
            parent_id=None,
            user_content=str(n),
            model="m",
            first_seq=1,
            reserve_seq=50,
        )
        chats.append(chat.id)
        replies.append(reply.id)
    with StatementLog(db) as log:
        await store.checkpoint(
            [(replies[0], TEXT), (replies[1], TEXT)], [(chats[0], 80), (chats[1], 30)]
        )
    assert log.commits == 1
    verbs = [(verb, many) for verb, many in log.statements if verb != "BEGIN"]
    assert verbs == [("UPDATE", True), ("UPDATE", True)]  # messages, then chats
    assert [await event_seq(store, c) for c in chats] == [80, 50]  # at least, never lower
    assert (await store.get_message(replies[0])).parts == TEXT
