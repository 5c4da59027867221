"""Generations: which one runs, what a new one would collide with, heartbeats and the
recovery of those nobody drives any more. Part of `ChatStore` (see `store.repository`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, update

from streamkeep.store.errors import GenerationConflict, NotFound
from streamkeep.store.models import CHATS, GENERATIONS, MESSAGES
from streamkeep.store.queries import find_conflict
from streamkeep.store.records import GenerationRecord

if TYPE_CHECKING:
    from streamkeep.store.db import Database

_g = GENERATIONS.c
_GET_GENERATION = select(GENERATIONS).where(_g.id == bindparam("b_id"))
_RUNNING_OF_CHAT = select(GENERATIONS).where(
    _g.chat_id == bindparam("b_chat"), _g.status == "running"
)
_RUNNING_OF_USER = (
    select(_g.chat_id)
    .join_from(GENERATIONS, CHATS, CHATS.c.id == _g.chat_id)
    .where(CHATS.c.user_id == bindparam("b_user"), _g.status == "running")
    .order_by(_g.chat_id)
)
_HEARTBEAT = (
    update(GENERATIONS)
    .where(_g.id == bindparam("b_id"), _g.status == "running")
    .values(heartbeat_at=bindparam("b_now"), worker_id=bindparam("b_worker"))
)
_ALL_RUNNING = select(_g.id, _g.message_id, _g.worker_id, _g.heartbeat_at).where(
    _g.status == "running"
)
_END_ORPHAN = (
    update(GENERATIONS)
    .where(_g.id == bindparam("b_id"), _g.status == "running")
    .values(status="finished", ended_at=bindparam("b_now"))
)
_INTERRUPT = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"), MESSAGES.c.status == "streaming")
    .values(status="interrupted", completed_at=bindparam("b_now"))
)


class Generations:
    """`ChatStore`'s generation reads and their liveness."""

    _db: Database
    _clock: Callable[[], datetime]

    async def heartbeat(self, generation_ids: Sequence[str], worker_id: str) -> None:
        """Mark running generations as alive and owned by `worker_id`."""
        if not generation_ids:
            return
        now = self._clock()
        params = [{"b_id": i, "b_now": now, "b_worker": worker_id} for i in generation_ids]
        async with self._db.writing() as conn:
            await conn.execute(_HEARTBEAT, params)

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
        async with self._db.writing() as conn:
            running = (await conn.execute(_ALL_RUNNING)).all()
            orphans = [
                g
                for g in running
                if g.id not in exclude_generation_ids
                and (stale_before is None or g.heartbeat_at < stale_before)
                and (g.worker_id is None or g.worker_id not in exclude_worker_ids)
            ]
            if orphans:
                await conn.execute(_END_ORPHAN, [{"b_id": g.id, "b_now": now} for g in orphans])
                ended = [{"b_id": g.message_id, "b_now": now} for g in orphans]
                await conn.execute(_INTERRUPT, ended)
        return [g.message_id for g in orphans]

    async def find_conflict(
        self, chat_id: str, idempotency_key: str | None
    ) -> GenerationConflict | None:
        """What a new generation of this chat would collide with (returned, not
        raised): the one its idempotency key started, else the running one."""
        async with self._db.reading() as conn:
            return await find_conflict(conn, chat_id, idempotency_key)

    async def running_generation(self, chat_id: str) -> GenerationRecord | None:
        async with self._db.reading() as conn:
            row = (await conn.execute(_RUNNING_OF_CHAT, {"b_chat": chat_id})).first()
        return GenerationRecord.model_validate(row) if row is not None else None

    async def running_chats_of_user(self, user_id: str) -> list[str]:
        """The user's chats that have a running generation, on whichever worker (or
        none, if its worker died and nobody has swept it yet)."""
        async with self._db.reading() as conn:
            rows = (await conn.execute(_RUNNING_OF_USER, {"b_user": user_id})).all()
        return [row.chat_id for row in rows]

    async def get_generation(self, generation_id: str) -> GenerationRecord:
        async with self._db.reading() as conn:
            row = (await conn.execute(_GET_GENERATION, {"b_id": generation_id})).first()
        if row is None:
            raise NotFound("generation", generation_id)
        return GenerationRecord.model_validate(row)
