"""The database handle: engine set-up per backend, sessions, migrations, health.

SQLite (the default) runs in WAL mode, so readers never block the writer, with foreign
keys on; its statements run on the event loop (see `store.sqlite`), waiting for another
process's lock on a thread for up to `SQLITE_BUSY_TIMEOUT` seconds. PostgreSQL goes
through asyncpg. Both take plain `sqlite:///path` / `postgresql://...` URLs; the async
driver is filled in here.

Read with `session()`, write with `transaction()` (`reading()` / `writing()` do the
same without an ORM session, for Core statements on hot paths): on SQLite a write
transaction takes the write lock when it begins, and writers of one process queue in
memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from streamkeep.store import migrations
from streamkeep.store.core import CoreConnection, EngineConnection
from streamkeep.store.damage import load_json
from streamkeep.store.direct import DirectConnection, PreparedCache
from streamkeep.store.sqlite import InlineConnection, WalCheckpointer

logger = logging.getLogger(__name__)

# How long a SQLite call waits for another process's lock before failing (seconds).
SQLITE_BUSY_TIMEOUT = 30.0
# Seconds `ping` waits: a readiness probe must answer even when the database hangs.
PING_TIMEOUT = 5.0
# Execution option marking a connection whose transaction will write (see `transaction`).
_WRITE = "streamkeep_write"


def normalize_url(url: str) -> URL:
    """`sqlite:///x` -> `sqlite+aiosqlite:///x`, `postgres(ql)://` -> `postgresql+asyncpg://`."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")


class Database:
    """One engine and its sessions. Create with `from_url`, close with `dispose`."""

    def __init__(self, engine: AsyncEngine, *, wal: WalCheckpointer | None = None) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite allows one writer at a time. Writers of this process queue here, on the
        # event loop, instead of each holding a pooled connection (and a thread) while
        # sleeping in busy_timeout; busy_timeout remains for writers of other processes.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._watchers = _Watchers()
        self._wal = wal
        if wal is not None:  # SQLite: every commit of this process counts
            self.watch(None, wal.committed)
        # SQLite's statements run on the loop (see `store.sqlite`), where a pooled
        # connection's checkout and return cost more than a message's statements: the
        # Core hot paths keep one connection each, used by one transaction at a time,
        # and run their statements on it directly (see `store.direct`).
        self._held_writer: _HeldConnection | None = None
        self._held_reader: _HeldConnection | None = None
        if self._write_lock is not None:
            cache = PreparedCache(engine.dialect)
            self._held_writer = _HeldConnection(
                engine, self._write_lock, cache, self._watchers, write=True
            )
            self._held_reader = _HeldConnection(
                engine, asyncio.Lock(), cache, self._watchers, write=False
            )

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> Database:
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "postgresql":
            return cls(create_async_engine(parsed, pool_pre_ping=True, json_deserializer=load_json))
        if parsed.database in (None, "", ":memory:"):
            # Each pooled connection would be a separate empty database.
            raise ValueError("in-memory SQLite is not supported: give a file path")
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))

        async def connect() -> aiosqlite.Connection:
            return await InlineConnection(path, busy_timeout=sqlite_busy_timeout)

        engine = create_async_engine(parsed, async_creator=connect, json_deserializer=load_json)
        _configure_sqlite(engine)
        return cls(engine, wal=WalCheckpointer(path))

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; anything left uncommitted is rolled back on exit."""
        async with self._sessions() as session:
            yield session

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session for writing, committed on a clean exit and rolled back on error.

        On SQLite the transaction starts with BEGIN IMMEDIATE (it takes the write lock
        up front, so it cannot fail later when a read turns into a write).
        """
        async with self._writer(), self._sessions() as session:
            await session.connection(execution_options={_WRITE: True})
            yield session
            await session.commit()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[CoreConnection]:
        """A plain connection for Core reads: no ORM session to set up and tear down,
        which on the hot paths (every message) cost more than the queries."""
        if self._held_reader is not None:
            async with self._held_reader.transaction() as direct:
                yield direct
            return
        async with self.engine.connect() as conn:
            yield EngineConnection(conn)

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[CoreConnection]:
        """`transaction()` for Core statements: the same write lock and BEGIN IMMEDIATE,
        committed on a clean exit and rolled back on error, without a session."""
        if self._held_writer is not None:
            async with self._held_writer.transaction() as direct:
                yield direct
            return
        async with self._writer(), self.engine.connect() as conn:
            conn = await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                yield EngineConnection(conn)

    def watch(
        self, on_statement: Callable[[str, bool], None] | None, on_commit: Callable[[], None]
    ) -> Callable[[], None]:
        """Call `on_statement(sql, executemany)` (if given) before each statement runs
        and `on_commit()` after each commit, on every kind of connection (metrics,
        checkpoints, tests). Returns the function that stops it."""
        watchers, engine = self._watchers, self.engine.sync_engine

        def _on_execute(conn: Connection, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
            assert on_statement is not None
            on_statement(sql, bool(rest[-1]))  # rest: context, executemany

        def _on_commit(conn: Connection) -> None:
            on_commit()

        def unwatch() -> None:
            watchers.commit.remove(on_commit)
            event.remove(engine, "commit", _on_commit)
            if on_statement is not None:
                watchers.statement.remove(on_statement)
                event.remove(engine, "before_cursor_execute", _on_execute)

        watchers.commit.append(on_commit)
        event.listen(engine, "commit", _on_commit)
        if on_statement is not None:
            watchers.statement.append(on_statement)
            event.listen(engine, "before_cursor_execute", _on_execute)
        return unwatch

    async def upgrade(self) -> None:
        """Apply every Alembic revision not applied yet (safe to call at each start)."""
        async with self._writer(), self.engine.connect() as conn:
            conn = await conn.execution_options(**{_WRITE: True})
            await conn.run_sync(migrations.upgrade_to_head)

    async def ping(self) -> bool:
        """True when the database answers a trivial query within PING_TIMEOUT seconds."""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):  # OSError includes TimeoutError
            return False
        return True

    async def dispose(self) -> None:
        for held in (self._held_writer, self._held_reader):
            if held is not None:
                await held.close()
        if self._wal is not None:
            await self._wal.close()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield


@dataclass(slots=True)
class _Watchers:
    statement: list[Callable[[str, bool], None]] = field(default_factory=list)
    commit: list[Callable[[], None]] = field(default_factory=list)


class _HeldConnection:
    """SQLite: a driver connection kept open for one kind of transaction, one
    transaction at a time (under `lock`); replaced when it breaks."""

    def __init__(
        self,
        engine: AsyncEngine,
        lock: asyncio.Lock,
        cache: PreparedCache,
        watchers: _Watchers,
        *,
        write: bool,
    ) -> None:
        self._engine = engine
        self._lock = lock
        self._cache = cache
        self._watchers = watchers
        self._write = write
        # The pooled connection stays checked out while its driver connection is used.
        self._pooled: AsyncConnection | None = None
        self._direct: DirectConnection | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DirectConnection]:
        async with self._lock:
            direct = self._direct or await self._open()
            try:
                await direct.begin(write=self._write)
                yield direct
                if self._write:
                    await direct.commit()
            except BaseException:
                await self._end(direct.abort)
                raise
            if not self._write:
                # A read ends with a rollback, as a pooled connection's return does:
                # it changed nothing, and the commit count stays the writes' count.
                await self._end(direct.rollback)

    async def _open(self) -> DirectConnection:
        pooled = await self._engine.connect()
        raw = await pooled.get_raw_connection()
        inline = raw.driver_connection
        assert isinstance(inline, InlineConnection)
        self._pooled = pooled
        self._direct = DirectConnection(
            inline, self._cache, self._watchers.statement, self._watchers.commit
        )
        return self._direct

    async def _end(self, rollback: Callable[[], Awaitable[None]]) -> None:
        """Roll back. A connection that cannot even do that is broken: it is dropped
        (the next transaction opens a new one) and the caller's outcome stands."""
        try:
            await rollback()
        except Exception:
            logger.warning("SQLite connection dropped: its rollback failed", exc_info=True)
            await self._drop(invalidate=True)

    async def _drop(self, *, invalidate: bool) -> None:
        pooled, self._pooled, self._direct = self._pooled, None, None
        if pooled is not None:
            if invalidate:
                await pooled.invalidate()
            await pooled.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop(invalidate=False)


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Pragmas per connection, and SQLAlchemy (not sqlite3) emitting BEGIN."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Stop the driver's own implicit BEGIN; `_on_begin` emits a real one, so reads
        # see a consistent snapshot and DDL (migrations) is transactional.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # No busy timeout in SQLite itself: it would sleep on the event loop's thread.
        # `InlineConnection` waits for another process's lock on its worker thread.
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA journal_mode=WAL")
        # Checkpoints run on a thread of their own every few hundred commits, not
        # inside a commit on the event loop (see `store.sqlite`).
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
