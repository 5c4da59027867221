"""ChatStore: chats, the message tree, the active branch and switching branches."""

from __future__ import annotations

import pytest

from streamkeep.store import (
    ChatStore,
    InvalidOperation,
    MessageRecord,
    NotFound,
)
from tests.store.conftest import Clock


async def reply(
    store: ChatStore, chat_id: str, parent_id: str | None, content: str | None
) -> tuple[MessageRecord | None, MessageRecord]:
    """One finished exchange: the user's message (if any) and a complete reply."""
    user, assistant, gen = await store.start_reply(
        chat_id=chat_id, parent_id=parent_id, user_content=content, model="m"
    )
    await store.finish_reply(
        generation_id=gen.id,
        message_id=assistant.id,
        status="complete",
        parts=[{"type": "text", "text": f"re: {content}"}],
        usage=None,
        finish_reason="stop",
        error=None,
    )
    return user, assistant


async def test_create_get_update_delete(store: ChatStore) -> None:
    chat = await store.create_chat(model="local/smollm2", title="Hi", system="Be brief.")
    assert chat.id.startswith("chat_") and len(chat.id) == 25
    assert (chat.title, chat.model, chat.system, chat.active_leaf_id) == (
        "Hi",
        "local/smollm2",
        "Be brief.",
        None,
    )
    assert chat.created_at.tzinfo is not None
    assert await store.get_chat(chat.id) == chat

    renamed = await store.update_chat(chat.id, title="Renamed", model="openai/gpt-4o-mini")
    assert (renamed.title, renamed.model, renamed.system) == (
        "Renamed",
        "openai/gpt-4o-mini",
        "Be brief.",
    )
    assert renamed.updated_at > chat.updated_at
    assert await store.get_chat(chat.id) == renamed

    await store.delete_chat(chat.id)
    with pytest.raises(NotFound) as err:
        await store.get_chat(chat.id)
    assert (err.value.what, err.value.id) == ("chat", chat.id)


async def test_unknown_ids_raise_not_found(store: ChatStore) -> None:
    for call in (
        store.get_chat("chat_x"),
        store.update_chat("chat_x", title="t"),
        store.delete_chat("chat_x"),
        store.get_message("msg_x"),
        store.active_branch("chat_x"),
        store.get_generation("gen_x"),
    ):
        with pytest.raises(NotFound):
            await call


async def test_records_serialise_datetimes_as_iso_8601(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    dumped = chat.model_dump(mode="json")
    assert dumped["created_at"] == "2026-01-01T12:00:00.001000Z"


async def test_list_newest_first_with_a_cursor_across_ties(store: ChatStore, clock: Clock) -> None:
    clock.step *= 0  # every chat gets the same updated_at: order falls back to the id
    made = [await store.create_chat(model="m", title=str(i)) for i in range(7)]
    expected = sorted((c.id for c in made), reverse=True)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.list_chats(limit=3, cursor=cursor)
        seen += [c.id for c in page]
        pages += 1
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


async def test_list_orders_by_last_update(store: ChatStore) -> None:
    old = await store.create_chat(model="m")
    new = await store.create_chat(model="m")
    page, cursor = await store.list_chats()
    assert [c.id for c in page] == [new.id, old.id] and cursor is None
    await store.update_chat(old.id, title="touched")
    page, _ = await store.list_chats()
    assert [c.id for c in page] == [old.id, new.id]


async def test_exact_last_page_has_no_cursor(store: ChatStore) -> None:
    for _ in range(2):
        await store.create_chat(model="m")
    page, cursor = await store.list_chats(limit=2)
    assert len(page) == 2 and cursor is None


@pytest.mark.parametrize("cursor", ["garbage!", "bm90IGpzb24", "WzEsMl0"])
async def test_bad_cursor_or_limit_is_invalid(store: ChatStore, cursor: str) -> None:
    with pytest.raises(InvalidOperation):
        await store.list_chats(cursor=cursor)
    with pytest.raises(InvalidOperation):
        await store.list_chats(limit=0)


async def test_tree_active_branch_siblings_and_switching(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    assert await store.active_branch(chat.id) == []
    u1, a1 = await reply(store, chat.id, None, "one")
    assert u1 is not None
    u2, a2 = await reply(store, chat.id, a1.id, "two")
    assert u2 is not None
    _, a1b = await reply(store, chat.id, u1.id, None)  # regenerate the first answer
    u2b, a2b = await reply(store, chat.id, a1.id, "two, edited")  # edit the second question
    assert u2b is not None

    # The newest reply is the tip of the active branch.
    assert (await store.get_chat(chat.id)).active_leaf_id == a2b.id
    branch = await store.active_branch(chat.id)
    assert [m.id for m in branch] == [u1.id, a1.id, u2b.id, a2b.id]
    assert [m.sibling_ids for m in branch] == [
        [u1.id],
        [a1.id, a1b.id],
        [u2.id, u2b.id],
        [a2b.id],
    ]
    assert [m.role for m in branch] == ["user", "assistant", "user", "assistant"]
    assert branch[2].parts == [{"type": "text", "text": "two, edited"}]

    assert (await store.get_message(a1b.id)).sibling_ids == [a1.id, a1b.id]
    assert (await store.get_message(u2.id)).sibling_ids == [u2.id, u2b.id]

    # Switch to the first version of question two: its newest leaf becomes active.
    switched = await store.update_chat(chat.id, active_leaf_id=u2.id)
    assert switched.active_leaf_id == a2.id
    assert [m.id for m in await store.active_branch(chat.id)] == [u1.id, a1.id, u2.id, a2.id]
    # An inner message with several leaves below selects the most recent one.
    assert (await store.update_chat(chat.id, active_leaf_id=u1.id)).active_leaf_id == a2b.id
    # A branch can be read without switching to it.
    other = await store.active_branch(chat.id, leaf_id=a1b.id)
    assert [m.id for m in other] == [u1.id, a1b.id]

    assert [m.id for m in await store.active_branch(chat.id, leaf_id=u2.id)] == [
        u1.id,
        a1.id,
        u2.id,
    ]
    # What a reply's prompt reads: the same path, other branches left out.
    for leaf in (u2.id, a2b.id, a1b.id):
        full = await store.active_branch(chat.id, leaf_id=leaf)
        prompt = await store.prompt_history(leaf)
        assert [(p.chat_id, p.role, p.parts) for p in prompt] == [
            (m.chat_id, m.role, m.parts) for m in full
        ]
    with pytest.raises(NotFound):
        await store.prompt_history("msg_nowhere")


async def test_messages_of_another_chat_are_refused(store: ChatStore) -> None:
    mine = await store.create_chat(model="m")
    theirs = await store.create_chat(model="m")
    _, foreign = await reply(store, theirs.id, None, "hello")
    before = await store.get_chat(mine.id)
    with pytest.raises(InvalidOperation):
        await store.update_chat(mine.id, title="new", active_leaf_id=foreign.id)
    with pytest.raises(InvalidOperation):
        await store.active_branch(mine.id, leaf_id=foreign.id)
    assert await store.get_chat(mine.id) == before  # the title did not change either


async def test_delete_cascades_to_messages_and_generations(store: ChatStore) -> None:
    chat = await store.create_chat(model="m")
    kept = await store.create_chat(model="m")
    user, assistant = await reply(store, chat.id, None, "hi")
    _, _, running = await store.start_reply(
        chat_id=chat.id, parent_id=assistant.id, user_content="more", model="m"
    )
    _, other = await reply(store, kept.id, None, "stay")
    await store.delete_chat(chat.id)
    assert user is not None
    for message_id in (user.id, assistant.id, running.message_id):
        with pytest.raises(NotFound):
            await store.get_message(message_id)
    with pytest.raises(NotFound):
        await store.get_generation(running.id)
    assert (await store.get_message(other.id)).chat_id == kept.id


async def test_a_client_may_choose_the_chat_id(store: ChatStore) -> None:
    chat = await store.create_chat(model="m", chat_id="usechat-Xy12")
    assert (await store.get_chat("usechat-Xy12")) == chat
    with pytest.raises(InvalidOperation):
        await store.create_chat(model="m", chat_id="usechat-Xy12")
    for bad in ("", "x" * 41):
        with pytest.raises(InvalidOperation):
            await store.create_chat(model="m", chat_id=bad)
    page, _ = await store.list_chats()
    assert [c.id for c in page] == [chat.id]
