"""SQLite statements on the event loop, with a thread only for waits and disk syncs.

aiosqlite runs every call (cursor, execute, fetch, close...) on a worker thread. On our
per-message statements (primary-key reads, small inserts and updates, microseconds of
SQLite work each) the thread hop is the cost: measured here, 167 us of CPU per SELECT
through the thread against 8 us inline, and a busy event loop adds GIL hand-offs to the
latency of every hop. So `InlineConnection` runs a call on the loop's own thread, except:

- a call that meets another process's write lock (SQLITE_BUSY). The connection's own
  busy timeout is 0, so the inline try fails at once; the call then goes to the worker
  thread, which retries it until `busy_timeout` seconds have passed, sleeping there
  rather than on the loop. Retrying is safe: writers start with BEGIN IMMEDIATE, so the
  lock is taken (or refused) before a statement changes anything, and writers of this
  process already queue on `Database`'s lock, so only other processes can be busy.
- WAL checkpoints (copying the log into the database file, with an fsync). SQLite's
  automatic checkpoint would run inside a commit, on the loop; it is off on our
  connections. Every `CHECKPOINT_EVERY` commits of the process, `WalCheckpointer` runs
  a PASSIVE checkpoint on a thread, through a connection of its own, while the writers
  go on: no commit waits for one (nor can a cancelled wait for one make a commit that
  landed look failed). A commit itself only appends to the WAL (synchronous=NORMAL: no
  fsync).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from streamkeep.store.damage import decode_text

logger = logging.getLogger(__name__)

# Sleeps between a busy call's retries on the worker thread: short first (most locks
# are held for a few milliseconds), then capped.
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 0.05
# Commits of the process between two WAL checkpoints. A message is two commits of a
# few pages each, so the WAL stays around SQLite's own default of 1,000 pages.
CHECKPOINT_EVERY = 200


def is_busy(exc: BaseException) -> bool:
    """True for SQLITE_BUSY and its extended codes (another connection holds a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF == sqlite3.SQLITE_BUSY
    )


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run inline; see the module docstring."""

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        def connect() -> sqlite3.Connection:
            # check_same_thread off: calls run on the loop's thread and, when busy, on
            # the worker's, never both at once (each call is awaited before the next).
            conn = sqlite3.connect(path, timeout=0, check_same_thread=False)
            conn.text_factory = decode_text  # a damaged row reads, it does not fail
            return conn

        super().__init__(connect, iter_chunk_size=64)
        self._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own threads
        self.busy_timeout = busy_timeout

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The driver's connection: call it only through `run` or `run_queued`."""
        conn: sqlite3.Connection = self._conn
        return conn

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the loop, or on the worker thread while another connection
        holds the lock (see the module docstring)."""
        return await self._execute(fn, *args)

    async def run_queued(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the worker thread, after any call still running there (one
        whose caller was cancelled while it waited for a lock, say)."""
        return await self._on_thread(fn, *args)

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        return await self._on_thread(self._patiently, fn, args, kwargs)

    async def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        # aiosqlite's own queue to its worker thread (untyped upstream).
        return await super()._execute(fn, *args)  # type: ignore[no-untyped-call]

    def _patiently(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """On the worker thread: `fn` until it is not busy or `busy_timeout` is over."""
        deadline = time.monotonic() + self.busy_timeout
        backoff = _FIRST_BACKOFF
        while True:
            try:
                return fn(*args, **kwargs)
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
        self._conn: sqlite3.Connection | None = None  # used by one thread at a time
        self._running: asyncio.Task[tuple[int, int, int]] | None = None

    def committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (
            self._running is None or self._running.done()
        ):
            self._running = asyncio.get_running_loop().create_task(self.checkpoint())

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
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (int(row[0]), int(row[1]), int(row[2]))

    async def close(self) -> None:
        running = self._running
        if running is not None:
            await asyncio.gather(running, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
