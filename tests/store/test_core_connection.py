"""`Database.reading()` / `writing()`: Core statements on either backend's connection.

On SQLite they run on the driver's connection directly (`store.direct`); what they
write and read must be exactly what SQLAlchemy's own execution writes and reads."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError, OperationalError, StatementError

from streamkeep.store import ChatStore, Database
from streamkeep.store.models import CHATS, MESSAGES
from tests.store.test_sqlite_inline import loop_ticks, write_lock

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
PARTS: list[dict[str, Any]] = [
    {"type": "text", "text": 'naïve ☃ "quoted" \n and \u2028 line'},
    {"type": "tool-call", "input": {"nested": [1, 2.5, None, True]}},
]


def chat_row(chat_id: str) -> dict[str, Any]:
    return {
        "id": chat_id,
        "title": None,
        "model": "m",
        "system": "be brief",
        "active_leaf_id": None,
        "created_at": WHEN,
        "updated_at": WHEN,
        "event_seq": 0,
        "user_id": None,
        "tools": None,
    }


def message_row(message_id: str, chat_id: str, **values: Any) -> dict[str, Any]:
    row = {
        "id": message_id,
        "chat_id": chat_id,
        "parent_id": None,
        "role": "assistant",
        "parts": PARTS,
        "status": "streaming",
        "model": "m",
        "finish_reason": None,
        "usage": None,
        "error": None,
        "created_at": WHEN,
        "completed_at": None,
        "api_key_id": None,
        "answered_by": None,
        "fallbacks": None,
    }
    return row | values


async def test_values_written_here_read_back_the_same_through_sqlalchemy(
    store: ChatStore, db: Database
) -> None:
    async with db.writing() as conn:
        await conn.execute(insert(CHATS), [chat_row("c1")])
        await conn.execute(insert(MESSAGES), [message_row("m1", "c1"), message_row("m2", "c1")])
    async with db.engine.connect() as sa:  # SQLAlchemy's own execution reads them
        row = (await sa.execute(select(MESSAGES).where(MESSAGES.c.id == "m1"))).one()
        raw_usage = (await sa.execute(text("SELECT usage IS NULL FROM messages"))).scalars()
        assert list(raw_usage) == [True, True]  # None is SQL NULL, not JSON null
    assert row.parts == PARTS
    assert row.created_at == WHEN and row.created_at.tzinfo is not None
    assert row.completed_at is None
    message = await store.get_message("m1")  # and the store
    assert message.parts == PARTS and message.created_at == WHEN


async def test_values_written_by_sqlalchemy_read_back_the_same_here(db: Database) -> None:
    await db.upgrade()
    async with db.engine.begin() as sa:
        await sa.execute(insert(CHATS), [chat_row("c1")])
        await sa.execute(insert(MESSAGES), [message_row("m1", "c1", usage={"input": 3})])
    async with db.reading() as conn:
        chat = (await conn.execute(select(CHATS).where(CHATS.c.id == "c1"))).first()
        message = (await conn.execute(select(MESSAGES))).first()
    assert chat is not None and message is not None
    assert chat.created_at == WHEN and chat.created_at.tzinfo is not None
    assert chat.system == "be brief" and chat.event_seq == 0
    assert message.parts == PARTS and message.usage == {"input": 3}
    assert message.completed_at is None
    id_, chat_id, *_ = message  # rows are tuples too
    assert (id_, chat_id) == ("m1", "c1")


async def test_statement_literals_bind_parameters_returning_and_rowcount(db: Database) -> None:
    await db.upgrade()
    async with db.writing() as conn:
        await conn.execute(insert(CHATS), [chat_row(f"c{i}") for i in range(3)])
        bump = update(CHATS).where(CHATS.c.id == bindparam("b_id")).values(event_seq=7)
        await conn.execute(bump, [{"b_id": "c0"}, {"b_id": "nope"}])  # executemany
        assert (await conn.execute(bump, {"b_id": "c1"})).rowcount == 1
        assert (await conn.execute(bump, {"b_id": "nope"})).rowcount == 0
        named = (
            update(CHATS)
            .where(CHATS.c.event_seq == 7, CHATS.c.id != bindparam("b_id"))
            .values(title=func.coalesce(bindparam("b_title"), CHATS.c.title))
            .returning(CHATS.c.id)
        )
        changed = await conn.execute(named, {"b_id": "c0", "b_title": "set"})
        assert changed.scalar_one() == "c1"
    async with db.reading() as conn:
        titles = await conn.execute(select(CHATS.c.id, CHATS.c.title).order_by(CHATS.c.id))
        assert [tuple(r) for r in titles.all()] == [("c0", None), ("c1", "set"), ("c2", None)]
        assert (await conn.execute(select(CHATS.c.id).where(CHATS.c.id == "x"))).first() is None


async def test_a_missing_parameter_is_an_error_and_runs_nothing(db: Database) -> None:
    await db.upgrade()
    stmt = update(CHATS).where(CHATS.c.id == bindparam("b_id")).values(title=bindparam("b_t"))
    async with db.writing() as conn:
        await conn.execute(insert(CHATS), [chat_row("c1")])
    with pytest.raises((InvalidRequestError, StatementError)):
        async with db.writing() as conn:
            await conn.execute(stmt, {"b_t": "x"})
    async with db.reading() as conn:
        assert (await conn.execute(select(CHATS.c.title))).scalar_one() is None


async def test_a_constraint_error_is_sqlalchemys_and_the_transaction_writes_nothing(
    db: Database,
) -> None:
    await db.upgrade()
    with pytest.raises(IntegrityError):
        async with db.writing() as conn:
            await conn.execute(insert(CHATS), [chat_row("c1")])
            await conn.execute(insert(CHATS), [chat_row("c1")])  # the same id again
    async with db.reading() as conn:
        assert (await conn.execute(select(func.count()).select_from(CHATS))).scalar_one() == 0
    async with db.writing() as conn:  # the connection is fine afterwards
        await conn.execute(insert(CHATS), [chat_row("c1")])


# -- SQLite only: another process's lock ---------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> Any:
    path = tmp_path / "direct.db"
    db = Database.from_url(f"sqlite:///{path}", sqlite_busy_timeout=0.3)
    await db.upgrade()
    try:
        yield path, ChatStore(db)
    finally:
        await db.dispose()


async def test_a_reply_start_waits_for_another_connections_lock_off_the_loop(
    sqlite_store: tuple[Path, ChatStore],
) -> None:
    path, store = sqlite_store
    chat = await store.create_chat(model="m")
    async with loop_ticks() as ticks:
        with write_lock(path) as other:
            start = asyncio.create_task(
                store.start_reply(chat_id=chat.id, parent_id=None, user_content="hi", model="m")
            )
            await asyncio.sleep(0.15)
            assert not start.done() and ticks[0] >= 5  # waiting, and the loop goes on
            other.execute("COMMIT")
    _, reply, _ = await asyncio.wait_for(start, 5)
    assert (await store.get_message(reply.id)).status == "streaming"


async def test_a_reply_start_past_the_busy_timeout_fails_and_writes_nothing(
    sqlite_store: tuple[Path, ChatStore],
) -> None:
    path, store = sqlite_store
    chat = await store.create_chat(model="m")
    with write_lock(path), pytest.raises(OperationalError, match="locked"):
        await store.start_reply(chat_id=chat.id, parent_id=None, user_content="hi", model="m")
    assert await store.active_branch(chat.id) == []
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "direct.db"
    # A busy timeout far longer than the lock is held here: the waiting BEGIN succeeds.
    db = Database.from_url(f"sqlite:///{path}", sqlite_busy_timeout=30)
    await db.upgrade()
    store = ChatStore(db)
    try:
        chat = await store.create_chat(model="m")
        begun = asyncio.Event()

        def on_statement(sql: str, many: bool) -> None:
            if sql == "BEGIN IMMEDIATE":
                begun.set()

        with write_lock(path) as other:
            unwatch = db.watch(on_statement, lambda: None)
            start = asyncio.create_task(
                store.start_reply(chat_id=chat.id, parent_id=None, user_content="hi", model="m")
            )
            async with asyncio.timeout(10):
                await begun.wait()
            unwatch()
            # Refused inline (the lock is held), its BEGIN IMMEDIATE now retries on the
            # worker thread. The caller goes away meanwhile: the task takes its
            # cancellation at the loop's next step, and its rollback waits, queued on
            # the thread behind that BEGIN...
            start.cancel()
            await asyncio.sleep(0)
            assert not start.done()
            other.execute("COMMIT")  # ...which now succeeds, and is rolled back
        with pytest.raises(asyncio.CancelledError):
            await start
        _, reply, _ = await store.start_reply(
            chat_id=chat.id, parent_id=None, user_content="again", model="m"
        )
        with sqlite3.connect(path, timeout=0) as check:  # nobody holds the write lock
            check.execute("BEGIN IMMEDIATE")
            rows = check.execute("SELECT id FROM messages WHERE role = 'assistant'").fetchall()
            check.rollback()
        assert rows == [(reply.id,)]
    finally:
        await db.dispose()
