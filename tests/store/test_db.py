"""`Database`: URL handling, SQLite set-up (WAL, foreign keys), health, writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from streamkeep.store import ChatStore, Database
from streamkeep.store.db import normalize_url


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///data/x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+asyncpg"),
        ("postgres://u@h/db", "postgresql+asyncpg"),
        ("postgresql+psycopg://u@h/db", "postgresql+asyncpg"),
    ],
)
def test_urls_get_the_async_driver(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/db")


async def test_sqlite_creates_the_parent_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "streamkeep.db"
    db = Database.from_url(f"sqlite:///{path}")
    try:
        async with db.reading() as conn:  # the store's own connections
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
            # SQLite itself never sleeps on a lock: that would be on the event loop.
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 0
        async with db.engine.connect() as engine_conn:  # migrations' (on aiosqlite's thread)
            assert (await engine_conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await engine_conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await engine_conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30000
        assert path.is_file()
    finally:
        await db.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url: str) -> None:
    # Every pooled connection would see its own empty database.
    with pytest.raises(ValueError, match="in-memory"):
        Database.from_url(url)


async def test_ping(db: Database) -> None:
    assert await db.ping() is True


async def test_ping_is_false_when_unreachable() -> None:
    db = Database.from_url("postgresql://nobody@127.0.0.1:1/none")
    try:
        assert await db.ping() is False
    finally:
        await db.dispose()


async def test_a_failed_transaction_writes_nothing(store: ChatStore, db: Database) -> None:
    chat = await store.create_chat(model="m")
    with pytest.raises(RuntimeError):
        async with db.writing() as conn:
            await conn.execute(text("DELETE FROM chats"))
            raise RuntimeError("boom")
    assert (await store.get_chat(chat.id)).id == chat.id


async def test_concurrent_writers_all_succeed(store: ChatStore) -> None:
    # Many writers at once: on SQLite they queue for the one write lock instead of
    # failing with "database is locked".
    chats = await asyncio.gather(*(store.create_chat(model=f"m{i}") for i in range(20)))
    listed, _ = await store.list_chats(limit=100)
    assert {c.id for c in listed} == {c.id for c in chats}


async def test_two_sqlite_engines_write_the_same_file(tmp_path: Path) -> None:
    # Two engines are two processes' view of one file: WAL + busy_timeout let them
    # interleave writes.
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = Database.from_url(url), Database.from_url(url)
    try:
        await first.upgrade()
        await second.upgrade()
        a, b = ChatStore(first), ChatStore(second)
        made = await asyncio.gather(*(s.create_chat(model="m") for s in (a, b) * 10))
        listed, _ = await a.list_chats(limit=100)
        assert {c.id for c in listed} == {c.id for c in made}
    finally:
        await first.dispose()
        await second.dispose()
