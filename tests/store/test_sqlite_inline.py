"""SQLite statements run on the event loop; another connection's lock is waited for on
the worker thread, so the loop keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from streamkeep.store import ChatStore, Database
from streamkeep.store.direct import DirectConnection
from tests.scaleout.waits import eventually


@pytest.fixture
async def db_path(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "locks.db"
    db = Database.from_url(f"sqlite:///{path}")
    await db.upgrade()
    await db.dispose()
    yield path


@contextlib.asynccontextmanager
async def loop_ticks() -> AsyncIterator[list[int]]:
    """Counts (in its one item) 10 ms ticks of the event loop while inside: a call
    that blocked the loop would stop them."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks[0] += 1

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def test_statements_run_on_the_event_loop_thread(db_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{db_path}")
    seen: list[int] = []
    try:
        for transaction in (db.reading, db.writing):
            async with transaction() as conn:
                assert isinstance(conn, DirectConnection)
                conn.connection.sqlite.create_function("thread_id", 0, threading.get_ident)
                seen.append((await conn.execute(text("SELECT thread_id()"))).scalar_one())
    finally:
        await db.dispose()
    assert seen == [threading.get_ident()] * 2


async def test_a_write_waits_for_another_connections_lock_without_blocking_the_loop(
    db_path: Path,
) -> None:
    db = Database.from_url(f"sqlite:///{db_path}")
    store = ChatStore(db)
    try:
        async with loop_ticks() as ticks:
            with write_lock(db_path) as other:
                write = asyncio.create_task(store.create_chat(model="openai/m", title="waited"))
                await asyncio.sleep(0.3)
                assert not write.done()  # still waiting for the lock...
                assert ticks[0] >= 10  # ...on the worker thread: the loop went on meanwhile
                other.execute("COMMIT")
        chat = await asyncio.wait_for(write, 5)
        assert (await store.get_chat(chat.id)).title == "waited"
    finally:
        await db.dispose()


async def test_a_lock_held_past_the_busy_timeout_fails_and_writes_nothing(
    db_path: Path,
) -> None:
    db = Database.from_url(f"sqlite:///{db_path}", sqlite_busy_timeout=0.2)
    store = ChatStore(db)
    try:
        with write_lock(db_path), pytest.raises(sa_exc.OperationalError, match="locked"):
            await store.create_chat(model="openai/m")
        chats, _ = await store.list_chats()
        assert chats == []
    finally:
        await db.dispose()


async def test_reads_go_on_while_another_connection_writes(db_path: Path) -> None:
    # WAL: a reader never waits for the writer, so reads stay inline even then.
    db = Database.from_url(f"sqlite:///{db_path}", sqlite_busy_timeout=0.2)
    store = ChatStore(db)
    try:
        chat = await store.create_chat(model="openai/m", title="before")
        with write_lock(db_path) as other:
            other.execute("UPDATE chats SET title = 'uncommitted'")
            assert (await store.get_chat(chat.id)).title == "before"
    finally:
        await db.dispose()


async def test_wal_checkpoints_run_on_a_thread_every_few_hundred_commits(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamkeep.store import sqlite as inline

    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 5)
    ran: list[tuple[int, tuple[int, int, int]]] = []
    checkpoint = inline.WalCheckpointer._checkpoint

    def watched(self: inline.WalCheckpointer) -> tuple[int, int, int]:
        result = checkpoint(self)
        ran.append((threading.get_ident(), result))
        return result

    monkeypatch.setattr(inline.WalCheckpointer, "_checkpoint", watched)
    db = Database.from_url(f"sqlite:///{db_path}")
    store = ChatStore(db)
    try:
        async with db.reading() as conn:  # SQLite itself never checkpoints
            assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one() == 0
        for _ in range(4):
            await store.create_chat(model="openai/m")
        await asyncio.sleep(0.05)
        assert ran == []
        chat = await store.create_chat(model="openai/m")  # commit 5
        await store.update_chat(chat.id, title="x")
        await eventually(lambda: len(ran) > 0)
        [(thread, (busy, frames, copied))] = ran
        assert thread != threading.get_ident()
        assert busy == 0 and frames > 0 and copied > 0
        for _ in range(4):  # 10
            await store.update_chat(chat.id, title="y")
        await eventually(lambda: len(ran) == 2)
    finally:
        await db.dispose()


async def test_a_commit_never_waits_for_a_checkpoint(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamkeep.store import sqlite as inline

    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    checkpoint = inline.WalCheckpointer._checkpoint

    def held(self: inline.WalCheckpointer) -> tuple[int, int, int]:
        started.set()
        release.wait(10)
        try:
            return checkpoint(self)
        finally:
            finished.set()

    monkeypatch.setattr(inline.WalCheckpointer, "_checkpoint", held)
    db = Database.from_url(f"sqlite:///{db_path}")
    store = ChatStore(db)
    try:
        chat = await store.create_chat(model="openai/m")
        # That commit started a checkpoint, which is now held on its thread...
        assert await asyncio.to_thread(started.wait, 10), "no checkpoint was started"
        # ...and the writes go on meanwhile: none waits for it.
        async with asyncio.timeout(5):
            for _ in range(3):
                await store.create_chat(model="openai/m")
                await store.update_chat(chat.id, title="t")
        assert not finished.is_set()  # every write above landed while it was held
        chats, _ = await store.list_chats()
        assert len(chats) == 4
    finally:
        release.set()
        await db.dispose()


async def test_the_hot_paths_keep_one_connection_and_replace_a_broken_one(db_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{db_path}")
    try:

        async def driver_of_writer() -> object:
            async with db.writing() as conn:
                assert isinstance(conn, DirectConnection)
                return conn.connection

        first = await driver_of_writer()
        assert await driver_of_writer() is first  # no checkout / return per transaction
        with pytest.raises(RuntimeError, match="broke"):
            async with db.writing() as conn:
                assert isinstance(conn, DirectConnection)
                conn.connection.sqlite.close()  # e.g. the file went away
                raise RuntimeError("broke")  # the caller's error is the one raised
        replaced = await driver_of_writer()
        assert replaced is not first
        async with db.reading() as conn:  # reads have their own
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            assert isinstance(conn, DirectConnection)
            assert conn.connection is not replaced
    finally:
        await db.dispose()


async def test_a_read_on_the_held_connection_ends_in_a_rollback_not_a_commit(
    db_path: Path,
) -> None:
    db = Database.from_url(f"sqlite:///{db_path}")
    commits: list[str] = []
    db.watch(None, lambda: commits.append("commit"))
    try:
        async with db.reading() as conn:
            await conn.execute(text("SELECT 1"))
            assert isinstance(conn, DirectConnection)
            assert conn.connection.sqlite.in_transaction
        assert commits == []  # the commit count (a metric) counts writes only
        assert not conn.connection.sqlite.in_transaction  # rolled back
        async with db.writing() as conn:
            await conn.execute(text("SELECT 1"))
        assert commits == ["commit"]
    finally:
        await db.dispose()


_EXIT_SCRIPT = """
import asyncio, sqlite3, sys
from streamkeep.store import Database

async def main(path):
    db = Database.from_url("sqlite:///" + path, sqlite_busy_timeout=20)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock

    async def write():
        async with db.writing():
            pass

    asyncio.ensure_future(write())
    await asyncio.sleep(0.5)  # the write now waits for the lock on the worker thread
    return holder

holder = asyncio.new_event_loop().run_until_complete(main(sys.argv[1]))
print("main done", flush=True)
"""


def test_a_pending_lock_wait_does_not_hold_up_the_interpreters_exit(db_path: Path) -> None:
    # The worker thread sleeping in a busy wait must not keep a process that ends
    # (without disposing the database) alive for the whole busy timeout: as
    # aiosqlite's and SQLAlchemy's threads, it is a daemon.
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert "main done" in done.stdout, done.stderr
    assert elapsed < 8, f"exit took {elapsed:.1f} s"
