"""Statements and reads the store's modules share, each inside the caller's transaction.

Every statement the store runs is a Core construct built once, at import, with named
`bindparam`s (`b_...`): a statement object memoizes its cache key for SQLAlchemy's
compiled-SQL cache, and on SQLite `store.direct` compiles each one once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select

from streamkeep.store.core import CoreConnection
from streamkeep.store.errors import GenerationConflict, InvalidOperation, NotFound
from streamkeep.store.ids import message_id as new_message_id
from streamkeep.store.models import CHATS, GENERATIONS, ID_LENGTH, MESSAGES
from streamkeep.store.records import MessageRecord, MessageStatus, Role
from streamkeep.store.tree import Node, Tree

GET_CHAT = select(CHATS).where(CHATS.c.id == bindparam("b_id"))
GET_MESSAGE = select(MESSAGES).where(MESSAGES.c.id == bindparam("b_id"))
_TREE = select(MESSAGES.c.id, MESSAGES.c.parent_id, MESSAGES.c.created_at).where(
    MESSAGES.c.chat_id == bindparam("b_chat")
)
_KEYED = select(GENERATIONS.c.id, GENERATIONS.c.message_id, GENERATIONS.c.status).where(
    GENERATIONS.c.chat_id == bindparam("b_chat"),
    GENERATIONS.c.idempotency_key == bindparam("b_key"),
)
_RUNNING = select(GENERATIONS.c.id, GENERATIONS.c.message_id).where(
    GENERATIONS.c.chat_id == bindparam("b_chat"), GENERATIONS.c.status == "running"
)


def _branch() -> Select[Any]:
    """The rows of a message and its ancestors: a recursive walk up the parents."""
    walk = select(MESSAGES).where(MESSAGES.c.id == bindparam("b_id")).cte("branch", recursive=True)
    up = walk.alias("up")
    walk = walk.union_all(select(MESSAGES).where(MESSAGES.c.id == up.c.parent_id))
    return select(walk)


_BRANCH = _branch()


async def chat_row(conn: CoreConnection, chat_id: str) -> Any:
    row = (await conn.execute(GET_CHAT, {"b_id": chat_id})).first()
    if row is None:
        raise NotFound("chat", chat_id)
    return row


async def message_row(conn: CoreConnection, message_id: str) -> Any:
    row = (await conn.execute(GET_MESSAGE, {"b_id": message_id})).first()
    if row is None:
        raise NotFound("message", message_id)
    return row


async def load_tree(conn: CoreConnection, chat_id: str) -> Tree:
    rows = (await conn.execute(_TREE, {"b_chat": chat_id})).all()
    return Tree(Node(*row) for row in rows)


async def load_branch(conn: CoreConnection, tree: Tree, leaf_id: str) -> list[MessageRecord]:
    """The rows of root..leaf. NotFound if one is gone: only when `tree` was read in
    another snapshot than this query (the store reads both in one)."""
    path = tree.path_to(leaf_id)
    rows = {row.id: row for row in (await conn.execute(_BRANCH, {"b_id": leaf_id})).all()}
    for message_id in path:
        if message_id not in rows:
            raise NotFound("message", message_id)
    return [message_record(rows[i], tree.siblings(i)) for i in path]


async def find_conflict(
    conn: CoreConnection, chat_id: str, idempotency_key: str | None
) -> GenerationConflict | None:
    """The generation a new one for this chat would collide with, as an error."""
    if idempotency_key is not None:
        keyed = (await conn.execute(_KEYED, {"b_chat": chat_id, "b_key": idempotency_key})).first()
        if keyed is not None:
            return GenerationConflict(
                generation_id=keyed.id,
                message_id=keyed.message_id,
                same_key=True,
                running=keyed.status == "running",
            )
    other = (await conn.execute(_RUNNING, {"b_chat": chat_id})).first()
    if other is None:
        return None
    return GenerationConflict(generation_id=other.id, message_id=other.message_id, same_key=False)


def new_message(
    chat_id: str, parent_id: str | None, role: Role, status: MessageStatus, now: datetime
) -> dict[str, Any]:
    """An empty message row (every column, for a Core INSERT); the caller fills in
    what differs."""
    return {
        "id": new_message_id(),
        "chat_id": chat_id,
        "parent_id": parent_id,
        "role": role,
        "parts": [],
        "status": status,
        "model": None,
        "finish_reason": None,
        "usage": None,
        "error": None,
        "created_at": now,
        "completed_at": None,
        "api_key_id": None,
        "answered_by": None,
        "fallbacks": None,
    }


def checked_id(value: str) -> str:
    """A caller-chosen id, if it fits the id columns."""
    if not 0 < len(value) <= ID_LENGTH:
        raise InvalidOperation(f"ids are 1 to {ID_LENGTH} characters long")
    return value


def message_record(row: Any, sibling_ids: list[str] | None = None) -> MessageRecord:
    record = MessageRecord.model_validate(row)
    if sibling_ids is None:
        return record
    return record.model_copy(update={"sibling_ids": sibling_ids})
