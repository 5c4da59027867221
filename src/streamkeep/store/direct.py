"""SQLite's statements, run on the store's own driver connections (`store.sqlite`).

Why not SQLAlchemy's execution here: through `AsyncConnection` every statement costs
greenlet hand-offs, an execution context, a result object and events, which on a
message's few small statements is most of the database's CPU (benchmarks/chat_server.py
measures it).

What stays SQLAlchemy's: the statements are Core constructs, compiled by the engine's
own dialect (once each, `Prepared`), and every parameter and result value goes through
its column type's bind or result processor (JSON, UTC datetimes) as SQLAlchemy applies
them, so these paths and SQLAlchemy's own read and write the same values. Errors are
SQLAlchemy's exception classes (`IntegrityError`, `OperationalError`...). Left out,
and unused by the store: Python-side column defaults (an INSERT gets every column
from its caller), expanding IN parameters and SQLAlchemy's engine events
(`Database.watch` sees statements and commits of both kinds of connection).

Calls go through `SqliteConnection.run`: on the event loop, and on its worker thread
only while another process holds the lock (see `store.sqlite`).
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from streamkeep.store.core import Params, Rows
from streamkeep.store.sqlite import SqliteConnection

# Statements compiled at most (beyond this, e.g. one-off `text()`, each compiles anew).
MAX_PREPARED = 256
_MISSING = object()


class Prepared:
    """One statement compiled for SQLite: its SQL, how to bind its parameters (in
    order, with the types' processors and the statement's own literal values) and how
    to read its rows (the result columns' processors, as named tuples)."""

    __slots__ = ("_binds", "_results", "_row", "sql")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        clause: Any = statement
        if not isinstance(clause, ClauseElement):
            raise TypeError(f"not a SQL statement: {statement!r}")
        # An INSERT without .values() binds every column: the caller passes them all.
        keys = [c.key for c in clause.table.columns] if isinstance(clause, Insert) else None
        compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=keys))
        if compiled.post_compile_params:
            raise ValueError("expanding (IN) parameters are not supported here")
        self.sql = compiled.string
        binds: list[tuple[str, Callable[[Any], Any] | None, Any]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((name, processor, _MISSING if bind.required else bind.effective_value))
        self._binds = tuple(binds)
        columns = list(getattr(clause, "exported_columns", ()))
        self._results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
        self._row = namedtuple("Row", [c.key for c in columns], rename=True) if columns else None

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters for one execution."""
        values = []
        for name, processor, default in self._binds:
            value = params.get(name, default)
            if value is _MISSING:
                raise InvalidRequestError(f"a value is required for bind parameter {name!r}")
            values.append(value if processor is None else processor(value))
        return tuple(values)

    def rows(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        row, processors = self._row, self._results
        if row is None or not raw:
            return raw
        return [
            row(*[v if p is None else p(v) for p, v in zip(processors, r, strict=True)])
            for r in raw
        ]

    def run(
        self, conn: sqlite3.Connection, args: Any, many: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Execute (on whichever thread `SqliteConnection.run` chose): raw rows, rowcount."""
        cursor = conn.executemany(self.sql, args) if many else conn.execute(self.sql, args)
        try:
            return cursor.fetchall(), cursor.rowcount
        finally:
            cursor.close()


class PreparedCache:
    """Statements compiled once per database (keyed by the statement object)."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        # id -> (statement, prepared): the statement is kept so its id is never reused.
        self._by_id: dict[int, tuple[Executable, Prepared]] = {}

    def get(self, statement: Executable) -> Prepared:
        hit = self._by_id.get(id(statement))
        if hit is not None:
            return hit[1]
        prepared = Prepared(statement, self._dialect)
        if len(self._by_id) < MAX_PREPARED:
            self._by_id[id(statement)] = (statement, prepared)
        return prepared


class DirectConnection:
    """`CoreConnection` on SQLite's own connection; see the module docstring.

    Transactions are the caller's (`begin`, `commit`, `rollback`), one at a time.
    `on_statement` / `on_commit` are the database's watchers (metrics).
    """

    def __init__(
        self,
        connection: SqliteConnection,
        cache: PreparedCache,
        on_statement: list[Callable[[str, bool], None]],
        on_commit: list[Callable[[], None]],
    ) -> None:
        self.connection = connection
        self._cache = cache
        self._on_statement = on_statement
        self._on_commit = on_commit

    async def execute(self, statement: Executable, parameters: Params | None = None) -> Rows:
        prepared = self._cache.get(statement)
        args: Any
        if parameters is None or isinstance(parameters, Mapping):
            many, args = False, prepared.args(parameters or {})
        else:
            many, args = True, [prepared.args(p) for p in parameters]
        self._notify(prepared.sql, many)
        try:
            raw, rowcount = await self.connection.run(
                prepared.run, self.connection.sqlite, args, many
            )
        except sqlite3.Error as exc:
            raise _wrapped(prepared.sql, args, exc) from exc
        return Rows(prepared.rows(raw), rowcount)

    async def begin(self, *, write: bool) -> None:
        """BEGIN IMMEDIATE for a write: it takes the write lock before anything else,
        so nothing after it can fail on another process's lock."""
        sql = "BEGIN IMMEDIATE" if write else "BEGIN"
        self._notify(sql, False)  # as SQLAlchemy's connections report their BEGIN
        await self._sql(sql)

    async def commit(self) -> None:
        try:
            await self.connection.run(self.connection.sqlite.commit)
        except sqlite3.Error as exc:
            raise _wrapped("COMMIT", (), exc) from exc
        for watcher in self._on_commit:
            watcher()

    async def rollback(self) -> None:
        """End the transaction, if one is open (a failed BEGIN leaves none)."""
        if self.connection.sqlite.in_transaction:
            await self._sql("ROLLBACK")

    async def abort(self) -> None:
        """Roll back after an error or a cancellation. On the worker thread, queued
        after a call that may still run there: a BEGIN IMMEDIATE whose caller was
        cancelled while it waited for the lock must not leave a transaction open."""
        try:
            await self.connection.run_queued(self.connection.sqlite.rollback)
        except sqlite3.Error as exc:
            raise _wrapped("ROLLBACK", (), exc) from exc

    async def _sql(self, sql: str) -> None:
        try:
            await self.connection.run(self.connection.sqlite.execute, sql)
        except sqlite3.Error as exc:
            raise _wrapped(sql, (), exc) from exc

    def _notify(self, sql: str, many: bool) -> None:
        for watcher in self._on_statement:
            watcher(sql, many)


def _wrapped(sql: str, args: Sequence[Any], exc: sqlite3.Error) -> Exception:
    """SQLAlchemy's exception for a driver error, as its own execution raises it (with
    `hide_parameters`, as the engines are made: the values are message content)."""
    return DBAPIError.instance(sql, args, exc, sqlite3.Error, hide_parameters=True)
