"""Reads of several statements see one snapshot: a chat deleted (by another
transaction, committed) between two of them does not break the read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamkeep.store import ChatStore, Database, NotFound
from streamkeep.store import chats as chats_module
from streamkeep.store.core import CoreConnection
from streamkeep.store.queries import load_branch, load_tree
from streamkeep.store.tree import Node, Tree


async def chat_with_a_reply(store: ChatStore) -> tuple[str, list[str]]:
    chat = await store.create_chat(model="m")
    user, reply, _ = await store.start_reply(
        chat_id=chat.id, parent_id=None, user_content="hi", model="m"
    )
    assert user is not None
    return chat.id, [user.id, reply.id]


def delete_after_the_tree_is_read(
    monkeypatch: pytest.MonkeyPatch, store: ChatStore, chat_id: str
) -> None:
    """The store's next read of a tree is followed at once by a real deletion of the
    chat, committed by another transaction before the read's next statement."""
    real = load_tree

    async def then_delete(conn: CoreConnection, tree_chat_id: str) -> Tree:
        tree = await real(conn, tree_chat_id)
        await store.delete_chat(chat_id)
        return tree

    monkeypatch.setattr(chats_module, "load_tree", then_delete)


async def test_active_branch_reads_one_snapshot_despite_a_concurrent_delete(
    store: ChatStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_id, ids = await chat_with_a_reply(store)
    delete_after_the_tree_is_read(monkeypatch, store, chat_id)

    branch = await store.active_branch(chat_id)

    assert [m.id for m in branch] == ids  # as it was when the read began
    monkeypatch.undo()
    with pytest.raises(NotFound):
        await store.active_branch(chat_id)  # the deletion did commit


async def test_a_branch_whose_rows_are_gone_is_not_found(store: ChatStore, db: Database) -> None:
    # A tree read apart from its rows (what a snapshot rules out) names a message that
    # no longer exists: NotFound (a 404), not a KeyError (a 500).
    tree = Tree([Node("msg_gone", None, datetime.now(UTC))])
    async with db.reading() as conn:
        with pytest.raises(NotFound):
            await load_branch(conn, tree, "msg_gone")
