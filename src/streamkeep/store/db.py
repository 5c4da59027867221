"""The database handle: engine set-up per backend, transactions, migrations, health.

The store runs Core statements in `reading()` and `writing()` transactions, on either
backend. SQLite (the default) runs in WAL mode, so readers never block the writer, with
foreign keys on; the store's statements run on connections of its own, on the event loop
(see `store.sqlite` and `store.direct`), waiting for another process's lock on a thread
for up to `SQLITE_BUSY_TIMEOUT` seconds; a write transaction takes the write lock when
it begins, and writers of one process queue in memory. PostgreSQL goes through asyncpg,
on SQLAlchemy's own connections. Both take plain `sqlite:///path` / `postgresql://...`
URLs; the async driver is filled in here. The engine (`engine`) also serves migrations
and `ping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from streamkeep.store.core import CoreConnection, EngineConnection
from streamkeep.store.damage import load_json
from streamkeep.store.direct import DirectConnection, PreparedCache
from streamkeep.store.migrations import upgrade_to_head
from streamkeep.store.sqlite import SqliteConnection, WalCheckpointer, configure

logger = logging.getLogger(__name__)

# How long a SQLite call waits for another process's lock before failing (seconds).
SQLITE_BUSY_TIMEOUT = 30.0
# Seconds `ping` waits: a readiness probe must answer even when the database hangs.
PING_TIMEOUT = 5.0
# Execution option marking a connection whose transaction will write (see `upgrade`).
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
    """One engine and the store's transactions. Create with `from_url`, close with
    `dispose`. `sqlite` (the database file and its busy timeout) is for SQLite only."""

    def __init__(self, engine: AsyncEngine, *, sqlite: tuple[Path, float] | None = None) -> None:
        self.engine = engine
        self._watchers = _Watchers()
        # Told how long each transaction of `reading`/`writing` took, by kind (metrics).
        self.on_transaction: Callable[[str, float], None] | None = None
        self._wal: WalCheckpointer | None = None
        # SQLite allows one writer at a time. Writers of this process queue here, on the
        # event loop, instead of each holding a connection (and a thread) while sleeping
        # in a busy wait; the busy wait remains for writers of other processes.
        self._write_lock: asyncio.Lock | None = None
        # SQLite's statements run on the loop (see `store.sqlite`), where opening a
        # connection per transaction would cost more than a message's statements: the
        # store keeps one connection for writes and one for reads, used by one
        # transaction at a time, and runs its statements on them (see `store.direct`).
        self._held_writer: _HeldConnection | None = None
        self._held_reader: _HeldConnection | None = None
        if sqlite is not None:
            path, busy_timeout = sqlite
            self._wal = WalCheckpointer(path)
            self.watch(None, self._wal.committed)  # every commit of this process counts
            self._write_lock = asyncio.Lock()
            cache = PreparedCache(engine.dialect)
            opener = _Opener(path, busy_timeout, cache, self._watchers)
            self._held_writer = _HeldConnection(opener, self._write_lock, write=True)
            self._held_reader = _HeldConnection(opener, asyncio.Lock(), write=False)

    @classmethod
    def from_url(cls, url: str, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> Database:
        # hide_parameters: a driver error's text (logged) would else carry the bound
        # values, i.e. message content.
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "postgresql":
            return cls(
                create_async_engine(
                    parsed, pool_pre_ping=True, json_deserializer=load_json, hide_parameters=True
                )
            )
        if parsed.database in (None, "", ":memory:"):
            # Each connection would be a separate empty database.
            raise ValueError("in-memory SQLite is not supported: give a file path")
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
        engine = create_async_engine(parsed, json_deserializer=load_json, hide_parameters=True)
        _configure_sqlite(engine, busy_timeout=sqlite_busy_timeout)
        return cls(engine, sqlite=(path, sqlite_busy_timeout))

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[CoreConnection]:
        """A read transaction: its statements all see one snapshot of the database
        (on PostgreSQL at REPEATABLE READ: its default READ COMMITTED gives each
        statement its own snapshot). It ends in a rollback."""
        started = time.perf_counter()
        try:
            if self._held_reader is not None:
                async with self._held_reader.transaction() as direct:
                    yield direct
                return
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                yield EngineConnection(conn)
        finally:
            if self.on_transaction is not None:
                self.on_transaction("read", time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[CoreConnection]:
        """A write transaction, committed on a clean exit and rolled back on error. On
        SQLite it starts with BEGIN IMMEDIATE (it takes the write lock up front, so it
        cannot fail later when a read turns into a write)."""
        started = time.perf_counter()
        try:
            if self._held_writer is not None:
                async with self._held_writer.transaction() as direct:
                    yield direct
                return
            async with self.engine.connect() as conn, conn.begin():
                yield EngineConnection(conn)
        finally:
            if self.on_transaction is not None:
                self.on_transaction("write", time.perf_counter() - started)

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
            await conn.run_sync(upgrade_to_head)

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


@dataclass(frozen=True, slots=True)
class _Opener:
    """How the store's SQLite connections are opened (see `store.sqlite`)."""

    path: Path
    busy_timeout: float
    cache: PreparedCache
    watchers: _Watchers

    async def open(self) -> DirectConnection:
        sqlite = await SqliteConnection.open(self.path, busy_timeout=self.busy_timeout)
        return DirectConnection(sqlite, self.cache, self.watchers.statement, self.watchers.commit)


class _HeldConnection:
    """SQLite: a connection kept open for one kind of transaction, one transaction at
    a time (under `lock`); replaced when it breaks."""

    def __init__(self, opener: _Opener, lock: asyncio.Lock, *, write: bool) -> None:
        self._opener = opener
        self._lock = lock
        self._write = write
        self._direct: DirectConnection | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[DirectConnection]:
        async with self._lock:
            if self._direct is None:
                self._direct = await self._opener.open()
            direct = self._direct
            try:
                await direct.begin(write=self._write)
                yield direct
                if self._write:
                    await direct.commit()
            except BaseException:
                await self._end(direct.abort)
                raise
            if not self._write:
                # A read ends with a rollback: it changed nothing, and the commit count
                # stays the writes' count.
                await self._end(direct.rollback)

    async def _end(self, rollback: Callable[[], Awaitable[None]]) -> None:
        """Roll back. A connection that cannot even do that is broken: it is dropped
        (the next transaction opens a new one) and the caller's outcome stands."""
        try:
            await rollback()
        except Exception:
            logger.warning("SQLite connection dropped: its rollback failed", exc_info=True)
            await self._drop()

    async def _drop(self) -> None:
        direct, self._direct = self._direct, None
        if direct is not None:
            await direct.connection.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout: float) -> None:
    """The engine's connections (migrations, `ping`): the store's settings, with the
    busy wait in SQLite itself (on aiosqlite's thread), and SQLAlchemy (not sqlite3)
    emitting BEGIN."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        configure(dbapi_connection, busy_timeout=busy_timeout)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
