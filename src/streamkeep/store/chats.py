"""Chats and their message trees: create, list, change, delete; read a message, a
branch, a prompt's history. Part of `ChatStore` (see `store.repository`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Select,
    String,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from streamkeep.store.cursor import decode as decode_cursor
from streamkeep.store.cursor import encode as encode_cursor
from streamkeep.store.damage import clean_parts
from streamkeep.store.errors import InvalidOperation, NotFound
from streamkeep.store.ids import chat_id as new_chat_id
from streamkeep.store.models import CHATS, MESSAGES
from streamkeep.store.queries import (
    chat_row,
    checked_id,
    load_branch,
    load_tree,
    message_record,
    message_row,
)
from streamkeep.store.records import ChatRecord, MessageRecord, PromptMessage
from streamkeep.store.tree import Tree

if TYPE_CHECKING:
    from streamkeep.store.db import Database

_c, _m = CHATS.c, MESSAGES.c
INSERT_CHAT = insert(CHATS)
_LIST_CHATS = select(CHATS).order_by(_c.updated_at.desc(), _c.id.desc()).limit(bindparam("b_limit"))
_AFTER_CURSOR = or_(
    _c.updated_at < bindparam("b_time"),
    and_(_c.updated_at == bindparam("b_time"), _c.id < bindparam("b_after")),
)
_LIST_CHATS_AFTER = _LIST_CHATS.where(_AFTER_CURSOR)
# One user's chats (the index on user_id, updated_at, id serves them in order).
_OWNED = _c.user_id == bindparam("b_user")
_LIST_OWNED = _LIST_CHATS.where(_OWNED)
_LIST_OWNED_AFTER = _LIST_CHATS_AFTER.where(_OWNED)
_CHAT_OF_MESSAGE = (
    select(CHATS).join_from(MESSAGES, CHATS, _m.chat_id == _c.id).where(_m.id == bindparam("b_id"))
)
# What is not given (NULL) stays as it is.
_UPDATE_CHAT = (
    update(CHATS)
    .where(_c.id == bindparam("b_id"))
    .values(
        title=func.coalesce(bindparam("b_title", type_=Text()), _c.title),
        model=func.coalesce(bindparam("b_model", type_=Text()), _c.model),
        active_leaf_id=func.coalesce(bindparam("b_leaf", type_=String()), _c.active_leaf_id),
        updated_at=bindparam("b_now"),
    )
    .returning(*_c)
)
_SET_TOOLS = update(CHATS).where(_c.id == bindparam("b_id")).values(tools=bindparam("b_tools"))
_DELETE_CHAT = delete(CHATS).where(_c.id == bindparam("b_id")).returning(_c.id)
_DELETE_MESSAGE = delete(MESSAGES).where(_m.id == bindparam("b_id"))
_SET_LEAF = (
    update(CHATS)
    .where(_c.id == bindparam("b_id"))
    .values(active_leaf_id=bindparam("b_leaf"), updated_at=bindparam("b_now"))
)
_SIBLINGS = (
    select(_m.id)
    .where(_m.chat_id == bindparam("b_chat"), _m.parent_id == bindparam("b_parent"))
    .order_by(_m.created_at, _m.id)
)
_ROOTS = (
    select(_m.id)
    .where(_m.chat_id == bindparam("b_chat"), _m.parent_id.is_(None))
    .order_by(_m.created_at, _m.id)
)


def _prompt_path() -> Select[tuple[str, str, list[dict[str, Any]]]]:
    walk = (
        select(_m.id, _m.parent_id, _m.chat_id, _m.role, _m.parts, literal(0).label("depth"))
        .where(_m.id == bindparam("b_id"))
        .cte("path", recursive=True)
    )
    up = walk.alias("up")
    walk = walk.union_all(
        select(_m.id, _m.parent_id, _m.chat_id, _m.role, _m.parts, up.c.depth + 1).where(
            _m.id == up.c.parent_id
        )
    )
    return select(walk.c.chat_id, walk.c.role, walk.c.parts).order_by(walk.c.depth.desc())


_PROMPT_PATH = _prompt_path()


@dataclass(frozen=True, slots=True)
class NewChat:
    """A chat to create in the transaction of its first reply (`start_reply`)."""

    system: str | None = None
    title: str | None = None
    user_id: str | None = None  # the owner (None: nobody's, single-user mode)


def new_chat_row(
    now: datetime,
    *,
    model: str,
    title: str | None = None,
    system: str | None = None,
    chat_id: str | None = None,
    user_id: str | None = None,
    tools: list[str] | None = None,
) -> dict[str, Any]:
    """A new empty chat's row (see `Chats.create_chat`), for `INSERT_CHAT`."""
    return {
        "id": checked_id(chat_id) if chat_id is not None else new_chat_id(),
        "title": title,
        "model": model,
        "system": system,
        "active_leaf_id": None,
        "created_at": now,
        "updated_at": now,
        "event_seq": 0,
        "user_id": user_id,
        "tools": tools or None,
    }


class Chats:
    """`ChatStore`'s chats and message trees."""

    _db: Database
    _clock: Callable[[], datetime]

    async def create_chat(
        self,
        *,
        model: str,
        title: str | None = None,
        system: str | None = None,
        chat_id: str | None = None,
        user_id: str | None = None,
        tools: list[str] | None = None,
    ) -> ChatRecord:
        """A new empty chat, `user_id`'s (None: nobody's, single-user mode); `chat_id`
        lets a client choose the id (useChat's, the gateway's), InvalidOperation if it
        is taken. `tools`: the names of the tools its replies may call."""
        row = new_chat_row(
            self._clock(),
            model=model,
            title=title,
            system=system,
            chat_id=chat_id,
            user_id=user_id,
            tools=tools,
        )
        try:
            async with self._db.writing() as conn:
                await conn.execute(INSERT_CHAT, row)
        except IntegrityError:
            raise InvalidOperation(f"chat {row['id']!r} exists already") from None
        return ChatRecord.model_validate(row)

    async def list_chats(
        self, *, limit: int = 50, cursor: str | None = None, user_id: str | None = None
    ) -> tuple[list[ChatRecord], str | None]:
        """Newest `updated_at` first, ties by id; pass the returned cursor for more.
        With `user_id`, only that user's chats; without, every chat."""
        if limit < 1:
            raise InvalidOperation("limit must be at least 1")
        params: dict[str, object] = {"b_limit": limit + 1}
        owned = user_id is not None
        if owned:
            params["b_user"] = user_id
        stmt = _LIST_OWNED if owned else _LIST_CHATS
        if cursor is not None:
            after_time, after_id = decode_cursor(cursor)
            stmt = _LIST_OWNED_AFTER if owned else _LIST_CHATS_AFTER
            params |= {"b_time": after_time, "b_after": after_id}
        async with self._db.reading() as conn:
            rows = (await conn.execute(stmt, params)).all()
        chats = [ChatRecord.model_validate(row) for row in rows]
        if len(chats) <= limit:
            return chats, None
        chats = chats[:limit]
        return chats, encode_cursor(chats[-1].updated_at, chats[-1].id)

    async def get_chat(self, chat_id: str) -> ChatRecord:
        async with self._db.reading() as conn:
            return ChatRecord.model_validate(await chat_row(conn, chat_id))

    async def chat_of_message(self, message_id: str) -> ChatRecord:
        """The chat a message is in; NotFound for an unknown message."""
        async with self._db.reading() as conn:
            row = (await conn.execute(_CHAT_OF_MESSAGE, {"b_id": message_id})).first()
        if row is None:
            raise NotFound("message", message_id)
        return ChatRecord.model_validate(row)

    async def update_chat(
        self,
        chat_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        active_leaf_id: str | None = None,
        tools: list[str] | None = None,
    ) -> ChatRecord:
        """Change what is given. `active_leaf_id` switches branch: the branch becomes
        root..that message's most recent descendant leaf (itself if it is a leaf).
        `tools` replaces the chat's tool names ([] for none)."""
        values = {"b_id": chat_id, "b_title": title, "b_model": model, "b_leaf": None}
        async with self._db.writing() as conn:
            if tools is not None:
                await conn.execute(_SET_TOOLS, {"b_id": chat_id, "b_tools": tools or None})
            if active_leaf_id is not None:
                await chat_row(conn, chat_id)  # a missing chat is told first
                tree = await load_tree(conn, chat_id)
                if active_leaf_id not in tree:
                    raise InvalidOperation(f"message {active_leaf_id!r} is not in this chat")
                values["b_leaf"] = tree.latest_leaf(active_leaf_id)
            row = (await conn.execute(_UPDATE_CHAT, {**values, "b_now": self._clock()})).first()
        if row is None:
            raise NotFound("chat", chat_id)
        return ChatRecord.model_validate(row)

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat with its messages and generations (ON DELETE CASCADE)."""
        async with self._db.writing() as conn:
            if (await conn.execute(_DELETE_CHAT, {"b_id": chat_id})).first() is None:
                raise NotFound("chat", chat_id)

    async def delete_message(self, message_id: str) -> None:
        """Delete a message with everything under it (its replies and their
        generations: ON DELETE CASCADE). When the chat's active branch ran through it,
        the branch becomes the most recent leaf that is left (none: the chat is empty).
        A message with a running generation under it must be stopped first (the
        caller's part): this does not look."""
        async with self._db.writing() as conn:
            message = await message_row(conn, message_id)
            chat = await chat_row(conn, message.chat_id)
            await conn.execute(_DELETE_MESSAGE, {"b_id": message_id})
            tree = await load_tree(conn, chat.id)
            leaf = chat.active_leaf_id
            if leaf is None or leaf not in tree:
                leaf = _latest_leaf(tree, message.parent_id)
            await conn.execute(_SET_LEAF, {"b_id": chat.id, "b_leaf": leaf, "b_now": self._clock()})

    async def get_message(self, message_id: str) -> MessageRecord:
        """One message, with its `sibling_ids` (itself and the others with the same
        parent, oldest first)."""
        async with self._db.reading() as conn:
            message = await message_row(conn, message_id)
            params = {"b_chat": message.chat_id, "b_parent": message.parent_id}
            siblings = _ROOTS if message.parent_id is None else _SIBLINGS
            sibling_ids = [row.id for row in (await conn.execute(siblings, params)).all()]
        return message_record(message, sibling_ids)

    async def prompt_history(self, message_id: str) -> list[PromptMessage]:
        """Root..message inclusive, as the model sees it: each message's chat, role and
        parts. One statement (a recursive walk up the parents) and no records: a reply
        in a long chat reads its whole branch first."""
        async with self._db.reading() as conn:
            rows = (await conn.execute(_PROMPT_PATH, {"b_id": message_id})).all()
        if not rows:
            raise NotFound("message", message_id)
        return [PromptMessage(chat_id, role, clean_parts(parts)) for chat_id, role, parts in rows]

    async def active_branch(
        self, chat_id: str, *, leaf_id: str | None = None
    ) -> list[MessageRecord]:
        """Root..leaf in order (the chat's active leaf unless `leaf_id` is given), each
        message with its `sibling_ids`; empty for a chat without messages."""
        async with self._db.reading() as conn:
            chat = await chat_row(conn, chat_id)
            leaf = leaf_id or chat.active_leaf_id
            if leaf is None:
                return []
            tree = await load_tree(conn, chat_id)
            if leaf not in tree:
                raise InvalidOperation(f"message {leaf!r} is not in this chat")
            return await load_branch(conn, tree, leaf)


def _latest_leaf(tree: Tree, parent_id: str | None) -> str | None:
    """The branch left after a deletion: the parent's latest leaf, else the chat's."""
    if parent_id is not None and parent_id in tree:
        return tree.latest_leaf(parent_id)
    return tree.latest()
