"""Queries the store composes, each inside the caller's session (and transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from streamkeep.store import ids
from streamkeep.store.errors import GenerationConflict, InvalidOperation, NotFound
from streamkeep.store.models import ID_LENGTH, Chat, Generation, Message
from streamkeep.store.records import MessageRecord, MessageStatus, Role
from streamkeep.store.tree import Node, Tree

# The tables, for Core statements on the per-message paths (no ORM unit of work).
CHATS = cast(Table, Chat.__table__)
MESSAGES = cast(Table, Message.__table__)
GENERATIONS = cast(Table, Generation.__table__)


async def chat_row(s: AsyncSession, chat_id: str) -> Chat:
    chat = await s.get(Chat, chat_id)
    if chat is None:
        raise NotFound("chat", chat_id)
    return chat


async def message_row(s: AsyncSession, message_id: str) -> Message:
    message = await s.get(Message, message_id)
    if message is None:
        raise NotFound("message", message_id)
    return message


async def load_tree(s: AsyncSession, chat_id: str) -> Tree:
    stmt = select(Message.id, Message.parent_id, Message.created_at).where(
        Message.chat_id == chat_id
    )
    return Tree(Node(*row) for row in (await s.execute(stmt)).all())


async def load_branch(s: AsyncSession, tree: Tree, leaf_id: str) -> list[MessageRecord]:
    """The rows of root..leaf. NotFound if one is gone: only when `tree` was read in
    another snapshot than this query (the store reads both in one)."""
    path = tree.path_to(leaf_id)
    rows = {m.id: m for m in (await s.scalars(select(Message).where(Message.id.in_(path))))}
    for message_id in path:
        if message_id not in rows:
            raise NotFound("message", message_id)
    return [message_record(rows[i], tree.siblings(i)) for i in path]


async def sibling_ids(s: AsyncSession, message: Message) -> list[str]:
    parent = Message.parent_id
    same_parent = parent.is_(None) if message.parent_id is None else parent == message.parent_id
    stmt = (
        select(Message.id)
        .where(Message.chat_id == message.chat_id, same_parent)
        .order_by(Message.created_at, Message.id)
    )
    return list((await s.scalars(stmt)).all())


async def find_conflict(
    s: AsyncSession | AsyncConnection, chat_id: str, idempotency_key: str | None
) -> GenerationConflict | None:
    """The generation a new one for this chat would collide with, as an error."""
    g = GENERATIONS.c
    if idempotency_key is not None:
        same = select(g.id, g.message_id, g.status).where(
            g.chat_id == chat_id, g.idempotency_key == idempotency_key
        )
        keyed = (await s.execute(same)).one_or_none()
        if keyed is not None:
            return GenerationConflict(
                generation_id=keyed.id,
                message_id=keyed.message_id,
                same_key=True,
                running=keyed.status == "running",
            )
    running = select(g.id, g.message_id).where(g.chat_id == chat_id, g.status == "running")
    other = (await s.execute(running)).one_or_none()
    if other is None:
        return None
    return GenerationConflict(generation_id=other.id, message_id=other.message_id, same_key=False)


def new_message(
    chat_id: str, parent_id: str | None, role: Role, status: MessageStatus, now: datetime
) -> dict[str, Any]:
    """An empty message row (every column, for a Core INSERT); the caller fills in
    what differs."""
    return {
        "id": ids.message_id(),
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
    }


def checked_id(value: str) -> str:
    """A caller-chosen id, if it fits the id columns."""
    if not 0 < len(value) <= ID_LENGTH:
        raise InvalidOperation(f"ids are 1 to {ID_LENGTH} characters long")
    return value


def message_record(message: Message, sibling_ids: list[str] | None = None) -> MessageRecord:
    record = MessageRecord.model_validate(message)
    if sibling_ids is None:
        return record
    return record.model_copy(update={"sibling_ids": sibling_ids})
