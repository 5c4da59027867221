"""SQLite connections for the store's statements: on the event loop, with a thread only
for waits and disk syncs.

A driver such as aiosqlite runs every call (execute, fetch, close...) on a worker thread.
Our statements are primary-key reads and small inserts and updates, microseconds of
SQLite work each, so that hop is their main cost, and on a busy event loop it adds GIL
hand-offs to the latency of every call (benchmarks/chat_server.py measures it). So
`SqliteConnection` owns a `sqlite3` connection and runs a call on the loop's own
thread, except:

- a call that meets another process's write lock (SQLITE_BUSY). The connection's own
  busy timeout is 0, so the inline try fails at once; the call then goes to the
  connection's worker thread, which retries it until `busy_timeout` seconds have
  passed, sleeping there rather than on the loop. Retrying is safe: writers start with
  BEGIN IMMEDIATE, so the lock is taken (or refused) before a statement changes
  anything, and writers of this process already queue on `Database`'s lock, so only
  other processes can be busy.
- WAL checkpoints (copying the log into the database file, with an fsync). SQLite's
  automatic checkpoint would run inside a commit, on the loop; it is off on our
  connections. Every `CHECKPOINT_EVERY` commits of the process, `WalCheckpointer` runs
  a PASSIVE checkpoint on a thread, through a connection of its own, while the writers
  go on: no commit waits for one (nor can a cancelled wait for one make a commit that
  landed look failed). A commit itself only appends to the WAL (synchronous=NORMAL: no
  fsync).

Only public APIs: the standard library's `sqlite3`, and one worker thread per
connection (`_Worker`, running calls in order, so they never run on two threads at
once). It is a daemon thread, as aiosqlite's and SQLAlchemy's are: a call sleeping in a
busy wait never holds up the interpreter's exit (a `ThreadPoolExecutor`'s thread would,
for up to `busy_timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from streamkeep.store.damage import decode_text

logger = logging.getLogger(__name__)

# Sleeps between a busy call's retries on the worker thread: short first (most locks
# are held for a few milliseconds), then capped.
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05
# Commits of the process between two WAL checkpoints. A message is two commits of a
# few pages each, so the WAL stays around SQLite's own default of 1,000 pages.
CHECKPOINT_EVERY = 200


def configure(connection: Any, *, busy_timeout: float) -> None:
    """The settings of every connection to the database: ours (`sqlite3`'s) and the
    engine's (SQLAlchemy's adapted aiosqlite connection), which both take these calls."""
    # No implicit BEGIN from the driver: the store (or SQLAlchemy) emits a real one, so
    # a read sees one snapshot and DDL (migrations) is transactional.
    connection.isolation_level = None
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        # Checkpoints run on a thread of their own (`WalCheckpointer`), not in a commit.
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY and its extended codes (another connection holds a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF == sqlite3.SQLITE_BUSY
    )


class _Worker:
    """One daemon thread running the calls given to `submit`, one at a time, in order."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="streamkeep-sqlite", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """End the thread once the calls given so far have run."""
        self._calls.put(None)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up before it began
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)


class SqliteConnection:
    """A `sqlite3` connection whose calls run inline; see the module docstring.

    Open with `open`, close with `close`. One caller at a time (each call is awaited
    before the next): the owner, `Database`, holds a lock around every transaction.
    """

    def __init__(self, sqlite: sqlite3.Connection, worker: _Worker, busy_timeout: float):
        self.sqlite = sqlite  # the driver's connection: call it through `run`/`run_queued`
        self._worker = worker
        self._busy_timeout = busy_timeout
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout: float) -> SqliteConnection:
        """Connect (on the worker thread: opening may wait for a lock on the file)."""
        worker = _Worker()

        def connect() -> sqlite3.Connection:
            # check_same_thread off: calls run on the loop's thread and, when busy, on
            # the worker's, never both at once.
            conn = sqlite3.connect(path, timeout=0, check_same_thread=False)
            conn.text_factory = decode_text  # a damaged row reads, it does not fail
            configure(conn, busy_timeout=0)  # waits happen on the worker (`run`)
            return conn

        try:
            sqlite = await asyncio.wrap_future(worker.submit(connect))
        except BaseException:
            worker.shutdown()
            raise
        return cls(sqlite, worker, busy_timeout)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the loop, or on the worker thread while another connection
        holds the lock (see the module docstring)."""
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        return await self.run_queued(self._patiently, fn, args)

    async def run_queued(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the worker thread, after any call still running there (one
        whose caller was cancelled while it waited for a lock, say)."""
        return await asyncio.wrap_future(self._worker.submit(fn, *args))

    async def close(self) -> None:
        """Close after any call still running on the worker thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.run_queued(self.sqlite.close)
        finally:
            self._worker.shutdown()

    def _patiently(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """On the worker thread: `fn` until it is not busy or `busy_timeout` is over."""
        deadline = time.monotonic() + self._busy_timeout
        backoff = _FIRST_BACKOFF
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


class WalCheckpointer:
    """PASSIVE WAL checkpoints every `CHECKPOINT_EVERY` commits (`committed()` counts
    them), one at a time, on a thread and a connection of their own."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._commits = 0
        self._sqlite: sqlite3.Connection | None = None  # used by one thread at a time
        self._task: asyncio.Task[tuple[int, int, int]] | None = None

    def committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self.checkpoint())

    async def checkpoint(self) -> tuple[int, int, int]:
        """(busy, WAL frames, frames copied). It copies what no reader still needs and
        never waits for anyone; a failure is logged, the next one tries again."""
        try:
            row: tuple[int, int, int] = await asyncio.to_thread(self._checkpoint)
        except sqlite3.Error as exc:
            logger.warning("WAL checkpoint failed: %s", exc)
            return (1, -1, -1)
        return row

    def _checkpoint(self) -> tuple[int, int, int]:
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
        row = self._sqlite.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (int(row[0]), int(row[1]), int(row[2]))

    async def close(self) -> None:
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
