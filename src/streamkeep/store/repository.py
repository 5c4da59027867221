"""`ChatStore`: the only storage API the rest of streamkeep uses.

Every public method is one transaction (reads: one consistent snapshot); it returns
pydantic records, never ORM objects, and a method that raises has written nothing.
Reads of several statements run in `_snapshot()`: on PostgreSQL at REPEATABLE READ (its
default READ COMMITTED gives each statement its own snapshot, so a chat deleted between
two of them would leave the second with dangling ids); SQLite's read transaction is one
snapshot already.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from streamkeep.store import cursor as cursor_codec
from streamkeep.store import ids
from streamkeep.store.core import CoreConnection
from streamkeep.store.damage import clean_parts
from streamkeep.store.db import Database
from streamkeep.store.errors import EventSeqMoved, GenerationConflict, InvalidOperation, NotFound
from streamkeep.store.models import Chat, Generation, Message
from streamkeep.store.queries import (
    CHATS,
    GENERATIONS,
    MESSAGES,
    chat_row,
    checked_id,
    find_conflict,
    load_branch,
    load_tree,
    message_record,
    message_row,
    new_message,
    sibling_ids,
)
from streamkeep.store.records import (
    FINAL_STATUSES,
    ChatRecord,
    GenerationRecord,
    MessageRecord,
    Role,
)

# The per-message statements, built once: a statement object memoizes its cache key
# for the compiled-SQL cache, which a new one per call computes again.
_GET_CHAT = select(CHATS).where(CHATS.c.id == bindparam("b_id"))
_PARENT_CHAT = select(MESSAGES.c.chat_id).where(MESSAGES.c.id == bindparam("b_id"))
_INSERT_CHAT = insert(CHATS)
_INSERT_MESSAGE = insert(MESSAGES)
_INSERT_GENERATION = insert(GENERATIONS)
_SET_LEAF = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("b_id"))
    .values(active_leaf_id=bindparam("b_leaf"), updated_at=bindparam("b_now"))
)
# A reply numbering its stream events after the chat's `event_seq`: the chat's new
# active leaf, and the ids its generation may use, unless another generation took them.
_SET_LEAF_RESERVING = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("b_id"), CHATS.c.event_seq < bindparam("b_first"))
    .values(
        active_leaf_id=bindparam("b_leaf"),
        updated_at=bindparam("b_now"),
        event_seq=bindparam("b_reserve"),
    )
)
_EVENT_SEQ = select(CHATS.c.event_seq).where(CHATS.c.id == bindparam("b_id"))
# A chat's first user message titles a chat that has no title (never replaces one).
_SET_TITLE = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("b_id"), CHATS.c.title.is_(None))
    .values(title=bindparam("b_title"))
)
_END_GENERATION = (
    update(GENERATIONS)
    .where(GENERATIONS.c.id == bindparam("b_id"), GENERATIONS.c.message_id == bindparam("b_mid"))
    .values(status="finished", ended_at=bindparam("b_now"))
    .returning(GENERATIONS.c.chat_id)
)
_END_RUNNING_GENERATION = _END_GENERATION.where(GENERATIONS.c.status == "running")
_FINISH_MESSAGE = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        parts=bindparam("b_parts"),
        usage=bindparam("b_usage"),
        finish_reason=bindparam("b_reason"),
        error=bindparam("b_error"),
        completed_at=bindparam("b_now"),
        # The model that answered, when the caller knows it; else the one asked.
        model=func.coalesce(bindparam("b_model", type_=Text()), MESSAGES.c.model),
    )
)
_TOUCH_CHAT = (
    update(CHATS).where(CHATS.c.id == bindparam("b_id")).values(updated_at=bindparam("b_now"))
)
# The chat's latest generation ended: its event ids end exactly at `b_seq`.
_TOUCH_CHAT_SEQ = _TOUCH_CHAT.values(event_seq=bindparam("b_seq"))
# An older one (ended already, e.g. interrupted): never lower what a newer one reserved.
_TOUCH_CHAT_SEQ_AT_LEAST = _TOUCH_CHAT.values(
    event_seq=case(
        (CHATS.c.event_seq < bindparam("b_seq"), bindparam("b_seq")), else_=CHATS.c.event_seq
    )
)
_RAISE_EVENT_SEQ = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("b_id"), CHATS.c.event_seq < bindparam("b_seq"))
    .values(event_seq=bindparam("b_seq"))
)


def _prompt_path() -> Select[tuple[str, str, list[dict[str, Any]]]]:
    m = MESSAGES.c
    walk = (
        select(m.id, m.parent_id, m.chat_id, m.role, m.parts, literal(0).label("depth"))
        .where(m.id == bindparam("b_id"))
        .cte("path", recursive=True)
    )
    up = walk.alias("up")
    walk = walk.union_all(
        select(m.id, m.parent_id, m.chat_id, m.role, m.parts, up.c.depth + 1).where(
            m.id == up.c.parent_id
        )
    )
    return select(walk.c.chat_id, walk.c.role, walk.c.parts).order_by(walk.c.depth.desc())


_PROMPT_PATH = _prompt_path()


@dataclass(frozen=True, slots=True)
class PromptMessage:
    """A stored message as prompt building needs it (see `ChatStore.prompt_history`)."""

    chat_id: str
    role: Role
    parts: list[dict[str, Any]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ChatStore:
    """Chats, their message trees and the generations writing into them.

    `clock` (timezone-aware) exists so tests can make timestamps tie or advance.
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read session whose statements all see one snapshot of the database."""
        async with self._db.session() as s:
            if not self._db.is_sqlite:
                await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield s

    # -- chats ---------------------------------------------------------------------

    async def create_chat(
        self,
        *,
        model: str,
        title: str | None = None,
        system: str | None = None,
        chat_id: str | None = None,
    ) -> ChatRecord:
        """A new empty chat; `chat_id` lets a client choose the id (useChat's, the
        gateway's), InvalidOperation if it is taken."""
        now = self._clock()
        row = {
            "id": checked_id(chat_id) if chat_id is not None else ids.chat_id(),
            "title": title,
            "model": model,
            "system": system,
            "active_leaf_id": None,
            "created_at": now,
            "updated_at": now,
            "event_seq": 0,
        }
        try:
            # Core: the gateway creates a chat for every call that names none.
            async with self._db.writing() as conn:
                await conn.execute(_INSERT_CHAT, row)
        except IntegrityError:
            raise InvalidOperation(f"chat {row['id']!r} exists already") from None
        return ChatRecord.model_validate(row)

    async def list_chats(
        self, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[ChatRecord], str | None]:
        """Newest `updated_at` first, ties by id; pass the returned cursor for more."""
        if limit < 1:
            raise InvalidOperation("limit must be at least 1")
        stmt = select(Chat).order_by(Chat.updated_at.desc(), Chat.id.desc()).limit(limit + 1)
        if cursor is not None:
            after_time, after_id = cursor_codec.decode(cursor)
            stmt = stmt.where(
                or_(
                    Chat.updated_at < after_time,
                    and_(Chat.updated_at == after_time, Chat.id < after_id),
                )
            )
        async with self._db.session() as s:
            chats = [ChatRecord.model_validate(c) for c in (await s.scalars(stmt)).all()]
        if len(chats) <= limit:
            return chats, None
        chats = chats[:limit]
        return chats, cursor_codec.encode(chats[-1].updated_at, chats[-1].id)

    async def get_chat(self, chat_id: str) -> ChatRecord:
        # Core, not the ORM: every message starts with this read.
        async with self._db.reading() as conn:
            row = (await conn.execute(_GET_CHAT, {"b_id": chat_id})).first()
        if row is None:
            raise NotFound("chat", chat_id)
        return ChatRecord.model_validate(row)

    async def update_chat(
        self,
        chat_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        active_leaf_id: str | None = None,
    ) -> ChatRecord:
        """Change what is given. `active_leaf_id` switches branch: the branch becomes
        root..that message's most recent descendant leaf (itself if it is a leaf)."""
        async with self._db.transaction() as s:
            chat = await chat_row(s, chat_id)
            if title is not None:
                chat.title = title
            if model is not None:
                chat.model = model
            if active_leaf_id is not None:
                tree = await load_tree(s, chat_id)
                if active_leaf_id not in tree:
                    raise InvalidOperation(f"message {active_leaf_id!r} is not in this chat")
                chat.active_leaf_id = tree.latest_leaf(active_leaf_id)
            chat.updated_at = self._clock()
        return ChatRecord.model_validate(chat)

    async def delete_chat(self, chat_id: str) -> None:
        """Delete the chat with its messages and generations (ON DELETE CASCADE)."""
        stmt = delete(Chat).where(Chat.id == chat_id).returning(Chat.id)
        async with self._db.transaction() as s:
            if (await s.execute(stmt)).scalar_one_or_none() is None:
                raise NotFound("chat", chat_id)

    # -- messages --------------------------------------------------------------------

    async def get_message(self, message_id: str) -> MessageRecord:
        async with self._snapshot() as s:
            message = await message_row(s, message_id)
            siblings = await sibling_ids(s, message)
        return message_record(message, siblings)

    async def siblings(self, message_id: str) -> list[str]:
        """The message and the others with the same parent, oldest first."""
        async with self._snapshot() as s:
            return await sibling_ids(s, await message_row(s, message_id))

    async def history(self, message_id: str) -> list[MessageRecord]:
        """Root..message inclusive: the conversation a reply to `message_id` sees."""
        async with self._snapshot() as s:
            message = await message_row(s, message_id)
            return await load_branch(s, await load_tree(s, message.chat_id), message_id)

    async def prompt_history(self, message_id: str) -> list[PromptMessage]:
        """Root..message inclusive, as the model sees it: each message's chat, role and
        parts. One statement (a recursive walk up the parents, so one snapshot), no ORM
        and no records: a reply in a long chat reads its whole branch first."""
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
        async with self._snapshot() as s:
            chat = await chat_row(s, chat_id)
            leaf = leaf_id or chat.active_leaf_id
            if leaf is None:
                return []
            tree = await load_tree(s, chat_id)
            if leaf not in tree:
                raise InvalidOperation(f"message {leaf!r} is not in this chat")
            return await load_branch(s, tree, leaf)

    # -- generations -----------------------------------------------------------------

    async def start_reply(
        self,
        *,
        chat_id: str,
        parent_id: str | None,
        user_content: str | None,
        model: str,
        idempotency_key: str | None = None,
        worker_id: str | None = None,
        prior: Sequence[tuple[Role, list[dict[str, Any]]]] = (),
        message_id: str | None = None,
        generation_id: str | None = None,
        user_message_id: str | None = None,
        first_seq: int | None = None,
        reserve_seq: int | None = None,
        title: str | None = None,
    ) -> tuple[MessageRecord | None, MessageRecord, GenerationRecord]:
        """Store the user's message (unless regenerating: `user_content` None), an empty
        streaming assistant reply under it, and a running generation, in one transaction.

        `prior` are finished messages (e.g. the history an OpenAI-compatible client
        sent) stored first, as a chain under `parent_id`. `message_id`,
        `generation_id` and `user_message_id` are ids the caller chose (with `ids`) to
        announce before this write lands. Raises GenerationConflict when the chat
        already has a running generation or the idempotency key was used before in this
        chat; the database's
        unique indexes make this hold across processes, not only within this one.

        `first_seq` is the first stream event id of the reply's generation: one past
        the chat's `event_seq` as the caller read it. Should another generation of the
        chat have used ids from there on since (it started and ended meanwhile), this
        raises EventSeqMoved (with the chat's `event_seq` now) and writes nothing. Else
        the chat's `event_seq` becomes `reserve_seq` (default `first_seq - 1`): ids the
        generation may send before a checkpoint or its final write records more, so a
        crash never lets the next generation reuse them.

        `title` becomes the chat's title if it has none (the caller passes one with a
        chat's first user message).
        """
        if user_content is None and parent_id is None and not prior:
            raise InvalidOperation("regenerating needs the parent_id of the prompt")
        seq: tuple[int, int] | None = None
        if first_seq is not None:
            reserve = first_seq - 1 if reserve_seq is None else reserve_seq
            if first_seq < 1 or reserve < first_seq - 1:
                raise InvalidOperation("event ids start at 1 and the reserve is not below them")
            seq = (first_seq, reserve)
        chain = list(prior)
        if user_content is not None:
            chain.append(("user", [{"type": "text", "text": user_content}]))
        now = self._clock()
        reply = new_message(chat_id, None, "assistant", "streaming", now)
        if message_id is not None:
            reply["id"] = checked_id(message_id)
        reply["model"] = model
        generation = {
            "id": checked_id(generation_id) if generation_id is not None else ids.generation_id(),
            "chat_id": chat_id,
            "message_id": reply["id"],
            "status": "running",
            "idempotency_key": idempotency_key,
            "worker_id": worker_id,
            "started_at": now,
            "heartbeat_at": now,
            "ended_at": None,
        }
        try:
            async with self._db.writing() as conn:
                rows = await self._insert_reply(
                    conn, parent_id, chain, reply, generation, user_message_id, seq
                )
                if title is not None:
                    await conn.execute(_SET_TITLE, {"b_id": chat_id, "b_title": title})
        except IntegrityError as exc:
            # Another process wrote between our checks and our inserts: usually its own
            # generation for this chat, rarely a deletion of the chat.
            async with self._snapshot() as s:
                conflict = await find_conflict(s, chat_id, idempotency_key)
                if conflict is None:
                    await chat_row(s, chat_id)  # NotFound if the chat is gone
            if conflict is None:  # what is left: a caller-chosen id that exists already
                raise InvalidOperation("message_id or generation_id is taken") from exc
            raise conflict from None
        user = MessageRecord.model_validate(rows[-1]) if user_content is not None else None
        return (
            user,
            MessageRecord.model_validate(reply),
            GenerationRecord.model_validate(generation),
        )

    async def _insert_reply(
        self,
        conn: CoreConnection,
        parent_id: str | None,
        chain: list[tuple[Role, list[dict[str, Any]]]],
        reply: dict[str, Any],
        generation: dict[str, Any],
        last_id: str | None = None,
        seq: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Check the parent, then insert `chain` (finished messages; the last one gets
        `last_id` when given), the reply and its generation; with `seq` (first event
        id, reserve), check and set the chat's `event_seq` (see `start_reply`).

        This runs for every message, so it is Core statements on plain rows (a session's
        unit of work, even ORM objects' attribute events, cost more than the statements),
        and a missing chat or a conflicting generation is left to the constraints: the
        caller's `IntegrityError` path tells which it was, as it must for other processes
        anyway.
        """
        chat_id = reply["chat_id"]
        if parent_id is not None:
            parent = (await conn.execute(_PARENT_CHAT, {"b_id": parent_id})).first()
            if parent is None or parent.chat_id != chat_id:
                if (await conn.execute(_GET_CHAT, {"b_id": chat_id})).first() is None:
                    raise NotFound("chat", chat_id)  # a missing chat is told first
                raise InvalidOperation(f"parent {parent_id!r} is not a message of this chat")
        now = reply["created_at"]
        rows: list[dict[str, Any]] = []
        for role, parts in chain:
            parent = rows[-1]["id"] if rows else parent_id
            row = new_message(chat_id, parent, role, "complete", now)
            row["parts"], row["completed_at"] = parts, now
            rows.append(row)
        if rows and last_id is not None:
            rows[-1]["id"] = checked_id(last_id)
        reply["parent_id"] = rows[-1]["id"] if rows else parent_id
        # Parents first (executemany keeps the order); then the generation, where the
        # unique indexes speak.
        await conn.execute(_INSERT_MESSAGE, [*rows, reply])
        await conn.execute(_INSERT_GENERATION, generation)
        leaf = {"b_id": chat_id, "b_leaf": reply["id"], "b_now": now}
        if seq is None:
            await conn.execute(_SET_LEAF, leaf)
            return rows
        first, reserve = seq
        moved = await conn.execute(
            _SET_LEAF_RESERVING, {**leaf, "b_first": first, "b_reserve": reserve}
        )
        if moved.rowcount == 0:  # the inserts above checked the chat exists: ids were taken
            current = (await conn.execute(_EVENT_SEQ, {"b_id": chat_id})).scalar_one()
            raise EventSeqMoved(chat_id, current)
        return rows

    async def finish_reply(
        self,
        *,
        generation_id: str,
        message_id: str,
        status: str,
        parts: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        finish_reason: str | None,
        error: str | None,
        model: str | None = None,
        event_seq: int | None = None,
    ) -> None:
        """Write the final message and mark its generation finished, together.

        `event_seq`, when given, is the last stream event id the generation uses: the
        chat's `event_seq` becomes it (it was the chat's latest generation while it
        ran), or at least it when the generation had ended already (e.g. interrupted
        by another worker: a newer one may have reserved more)."""
        if status not in FINAL_STATUSES:
            raise InvalidOperation(f"{status!r} is not a final message status")
        now = self._clock()
        values = {
            "b_id": message_id,
            "b_status": status,
            "b_parts": parts,
            "b_usage": usage,
            "b_reason": finish_reason,
            "b_error": error,
            "b_now": now,
            "b_model": model,
        }
        end = {"b_id": generation_id, "b_mid": message_id, "b_now": now}
        # Core on a plain connection: this runs at the end of every message.
        async with self._db.writing() as conn:
            running = False
            chat_id = None
            if event_seq is not None:
                chat_id = (await conn.execute(_END_RUNNING_GENERATION, end)).scalar_one_or_none()
                running = chat_id is not None
            if chat_id is None:
                chat_id = (await conn.execute(_END_GENERATION, end)).scalar_one_or_none()
            if chat_id is None:
                raise NotFound("generation", generation_id)
            await conn.execute(_FINISH_MESSAGE, values)
            touch = {"b_id": chat_id, "b_now": now}
            if event_seq is None:
                await conn.execute(_TOUCH_CHAT, touch)
            else:
                stmt = _TOUCH_CHAT_SEQ if running else _TOUCH_CHAT_SEQ_AT_LEAST
                await conn.execute(stmt, {**touch, "b_seq": event_seq})

    async def checkpoint(
        self,
        items: Sequence[tuple[str, list[dict[str, Any]]]],
        event_seqs: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Save the parts so far of many live replies in one transaction and one
        (executemany) statement; replies no longer streaming are left alone.

        `event_seqs` are (chat id, event id) pairs: each chat's `event_seq` is raised to
        at least that (one more executemany statement, in the same transaction)."""
        if not items and not event_seqs:
            return
        table = cast(Table, Message.__table__)  # Core: a plain executemany UPDATE
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.status == "streaming")
            .values(parts=bindparam("b_parts"))
        )
        params = [{"b_id": message_id, "b_parts": parts} for message_id, parts in items]
        seqs = [{"b_id": chat_id, "b_seq": seq} for chat_id, seq in event_seqs]
        async with self._db.transaction() as s:
            if params:
                await s.execute(stmt, params)
            if seqs:
                await s.execute(_RAISE_EVENT_SEQ, seqs)

    async def heartbeat(self, generation_ids: Sequence[str], worker_id: str) -> None:
        """Mark running generations as alive and owned by `worker_id`."""
        if not generation_ids:
            return
        stmt = (
            update(Generation)
            .where(Generation.id.in_(generation_ids), Generation.status == "running")
            .values(heartbeat_at=self._clock(), worker_id=worker_id)
        )
        async with self._db.transaction() as s:
            await s.execute(stmt)

    async def interrupt_orphans(
        self,
        *,
        exclude_generation_ids: Collection[str] = (),
        stale_before: datetime | None = None,
        exclude_worker_ids: Collection[str] = (),
    ) -> list[str]:
        """End running generations nobody drives any more (all but `exclude_...`;
        with `stale_before`, only those whose last heartbeat is older; never those of
        the live workers in `exclude_worker_ids`). Their messages become `interrupted`,
        keeping the last checkpoint. Returns those message ids."""
        now = self._clock()
        end = (
            update(Generation)
            .where(Generation.status == "running")
            .values(status="finished", ended_at=now)
            .returning(Generation.message_id)
        )
        if exclude_generation_ids:
            end = end.where(Generation.id.not_in(list(exclude_generation_ids)))
        if stale_before is not None:
            end = end.where(Generation.heartbeat_at < stale_before)
        if exclude_worker_ids:
            alive = Generation.worker_id.in_(list(exclude_worker_ids))
            end = end.where(or_(Generation.worker_id.is_(None), ~alive))
        async with self._db.transaction() as s:
            message_ids = list((await s.execute(end)).scalars())
            if message_ids:
                await s.execute(
                    update(Message)
                    .where(Message.id.in_(message_ids), Message.status == "streaming")
                    .values(status="interrupted", completed_at=now)
                )
        return message_ids

    async def find_conflict(
        self, chat_id: str, idempotency_key: str | None
    ) -> GenerationConflict | None:
        """What a new generation of this chat would collide with (returned, not
        raised): the one its idempotency key started, else the running one."""
        async with self._snapshot() as s:
            return await find_conflict(s, chat_id, idempotency_key)

    async def running_generation(self, chat_id: str) -> GenerationRecord | None:
        stmt = select(Generation).where(
            Generation.chat_id == chat_id, Generation.status == "running"
        )
        async with self._db.session() as s:
            generation = (await s.scalars(stmt)).one_or_none()
            return GenerationRecord.model_validate(generation) if generation else None

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        async with self._db.session() as s:
            generation = await s.get(Generation, generation_id)
            if generation is None:
                raise NotFound("generation", generation_id)
            return GenerationRecord.model_validate(generation)
