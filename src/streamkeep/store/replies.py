"""Replies: a reply's start (the user's message, the streaming reply and its running
generation, in one transaction), its checkpoints and its final write. Part of
`ChatStore` (see `store.repository`).

These run for every message, so they are few statements on plain rows (no ORM unit of
work, whose bookkeeping would cost more than the statements), and a missing chat or a
conflicting generation is left to the database's constraints: the `IntegrityError`
path tells which it was, as it must for other processes anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from streamkeep.store.chats import INSERT_CHAT, NewChat, new_chat_row
from streamkeep.store.core import CoreConnection
from streamkeep.store.errors import EventSeqMoved, InvalidOperation, NotFound
from streamkeep.store.ids import generation_id as new_generation_id
from streamkeep.store.models import CHATS, GENERATIONS, MESSAGES
from streamkeep.store.queries import (
    GET_CHAT,
    chat_row,
    checked_id,
    find_conflict,
    new_message,
)
from streamkeep.store.records import (
    FINAL_STATUSES,
    GenerationRecord,
    MessageRecord,
    Role,
)

if TYPE_CHECKING:
    from streamkeep.store.db import Database

_PARENT_CHAT = select(MESSAGES.c.chat_id).where(MESSAGES.c.id == bindparam("b_id"))
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
        answered_by=bindparam("b_answered_by"),
        fallbacks=bindparam("b_fallbacks"),
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
# Checkpoints: the parts so far of replies still streaming, and event ids used so far.
_SAVE_PARTS = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"), MESSAGES.c.status == "streaming")
    .values(parts=bindparam("b_parts"))
)
# A finished reply taken up again (a client's tool results continue it): only while it
# still waits for them and is still its chat's active leaf, whatever landed since the
# caller read it.
_REOPEN_MESSAGE = (
    update(MESSAGES)
    .where(
        MESSAGES.c.id == bindparam("b_id"),
        MESSAGES.c.chat_id == bindparam("b_chat"),
        MESSAGES.c.role == "assistant",
        MESSAGES.c.status == "complete",
        MESSAGES.c.finish_reason == "tool-calls",
        MESSAGES.c.id.in_(select(CHATS.c.active_leaf_id).where(CHATS.c.id == bindparam("b_chat"))),
    )
    .values(
        status="streaming",
        parts=bindparam("b_parts"),
        finish_reason=None,
        error=None,
        completed_at=None,
        api_key_id=bindparam("b_key"),
    )
)
_RAISE_EVENT_SEQ = (
    update(CHATS)
    .where(CHATS.c.id == bindparam("b_id"), CHATS.c.event_seq < bindparam("b_seq"))
    .values(event_seq=bindparam("b_seq"))
)


class Replies:
    """`ChatStore`'s reply writes."""

    _db: Database
    _clock: Callable[[], datetime]

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
        api_key_id: str | None = None,
        user_files: Sequence[dict[str, Any]] = (),
        new_chat: NewChat | None = None,
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
        chat's first user message). `api_key_id` is the key the reply was asked with,
        kept on the reply (not on the user's messages: usage is the reply's).
        `user_files` are the user message's file parts (images, see `store.images`),
        stored before its text. `new_chat` creates the chat `chat_id` (empty, with `model`)
        in the same transaction: a new chat and its first reply cost one commit.
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
            chain.append(("user", [*user_files, {"type": "text", "text": user_content}]))
        now = self._clock()
        reply = new_message(chat_id, None, "assistant", "streaming", now)
        if message_id is not None:
            reply["id"] = checked_id(message_id)
        reply["model"] = model
        reply["api_key_id"] = api_key_id
        generation = {
            "id": checked_id(generation_id) if generation_id is not None else new_generation_id(),
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
                if new_chat is not None:
                    row = new_chat_row(
                        now,
                        model=model,
                        system=new_chat.system,
                        title=new_chat.title,
                        chat_id=chat_id,
                        user_id=new_chat.user_id,
                    )
                    await conn.execute(INSERT_CHAT, row)
                rows = await self._insert_reply(
                    conn, parent_id, chain, reply, generation, user_message_id, seq
                )
                if title is not None:
                    await conn.execute(_SET_TITLE, {"b_id": chat_id, "b_title": title})
        except IntegrityError as exc:
            if new_chat is not None:  # nothing else can collide in a chat being created
                raise InvalidOperation(
                    f"chat {chat_id!r}, or an id chosen for its reply, exists already"
                ) from exc
            # Another process wrote between our checks and our inserts: usually its own
            # generation for this chat, rarely a deletion of the chat.
            async with self._db.reading() as conn:
                conflict = await find_conflict(conn, chat_id, idempotency_key)
                if conflict is None:
                    await chat_row(conn, chat_id)  # NotFound if the chat is gone
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
        id, reserve), check and set the chat's `event_seq` (see `start_reply`). A missing
        chat or a conflicting generation is left to the constraints (module docstring).
        """
        chat_id = reply["chat_id"]
        if parent_id is not None:
            parent = (await conn.execute(_PARENT_CHAT, {"b_id": parent_id})).first()
            if parent is None or parent.chat_id != chat_id:
                if (await conn.execute(GET_CHAT, {"b_id": chat_id})).first() is None:
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

    async def continue_reply(
        self,
        *,
        chat_id: str,
        message_id: str,
        parts: list[dict[str, Any]],
        idempotency_key: str | None = None,
        worker_id: str | None = None,
        generation_id: str | None = None,
        first_seq: int,
        reserve_seq: int,
        api_key_id: str | None = None,
    ) -> GenerationRecord:
        """Take a finished assistant reply up again: it is `streaming` with `parts` (its
        own, with a client's tool results in them) under a new running generation, in
        one transaction. Conflicts and event ids are as in `start_reply`; a message that
        is not a finished assistant reply of this chat is InvalidOperation."""
        now = self._clock()
        generation = {
            "id": checked_id(generation_id) if generation_id is not None else new_generation_id(),
            "chat_id": chat_id,
            "message_id": message_id,
            "status": "running",
            "idempotency_key": idempotency_key,
            "worker_id": worker_id,
            "started_at": now,
            "heartbeat_at": now,
            "ended_at": None,
        }
        reopen = {
            "b_id": message_id,
            "b_chat": chat_id,
            "b_parts": parts,
            "b_key": api_key_id,
        }
        try:
            async with self._db.writing() as conn:
                if (await conn.execute(_REOPEN_MESSAGE, reopen)).rowcount == 0:
                    await chat_row(conn, chat_id)  # NotFound for a missing chat
                    raise InvalidOperation(
                        f"message {message_id!r} is not a reply of this chat that waits "
                        "for tool results at the end of its active branch"
                    )
                await conn.execute(_INSERT_GENERATION, generation)
                leaf = {"b_id": chat_id, "b_leaf": message_id, "b_now": now}
                moved = await conn.execute(
                    _SET_LEAF_RESERVING, {**leaf, "b_first": first_seq, "b_reserve": reserve_seq}
                )
                if moved.rowcount == 0:
                    current = (await conn.execute(_EVENT_SEQ, {"b_id": chat_id})).scalar_one()
                    raise EventSeqMoved(chat_id, current)
        except IntegrityError as exc:
            async with self._db.reading() as conn:
                conflict = await find_conflict(conn, chat_id, idempotency_key)
            if conflict is None:
                raise InvalidOperation("generation_id is taken") from exc
            raise conflict from None
        return GenerationRecord.model_validate(generation)

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
        answered_by: str | None = None,
        fallbacks: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write the final message and mark its generation finished, together.

        `answered_by` and `fallbacks`: a fallback alias's record (which model answered,
        which were skipped and why); None for a model that is no alias.

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
            "b_answered_by": answered_by,
            "b_fallbacks": fallbacks,
        }
        end = {"b_id": generation_id, "b_mid": message_id, "b_now": now}
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
        params = [{"b_id": message_id, "b_parts": parts} for message_id, parts in items]
        seqs = [{"b_id": chat_id, "b_seq": seq} for chat_id, seq in event_seqs]
        async with self._db.writing() as conn:
            if params:
                await conn.execute(_SAVE_PARTS, params)
            if seqs:
                await conn.execute(_RAISE_EVENT_SEQ, seqs)
