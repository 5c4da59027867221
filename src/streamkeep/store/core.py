"""The connection the per-message Core statements run on, on either backend.

`Database.reading()` / `writing()` hand out a `CoreConnection`: `execute` takes a Core
statement (or `text()`) with its parameters (a list of them: executemany) and returns
the whole result as `Rows`. On PostgreSQL that is SQLAlchemy's own connection
(`EngineConnection`); on SQLite the statements run on the driver's connection directly
(`store.direct`). The store's hot paths are written once against this interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class Rows:
    """A statement's result, fetched whole: its rows (with named fields) and row count."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: Sequence[Any], rowcount: int) -> None:
        self._rows = rows
        # Rows changed by an INSERT/UPDATE/DELETE (for executemany: by all of them).
        self.rowcount = rowcount

    def all(self) -> Sequence[Any]:
        return self._rows

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        """The first column of the only row; NoResultFound / MultipleResultsFound else."""
        if len(self._rows) != 1:
            if not self._rows:
                raise NoResultFound("no row was found when one was required")
            raise MultipleResultsFound("multiple rows were found when one was required")
        return self._rows[0][0]

    def scalar_one_or_none(self) -> Any | None:
        """The first column of the only row, None without rows; MultipleResultsFound."""
        if len(self._rows) > 1:
            raise MultipleResultsFound("multiple rows were found when one or none was required")
        return self._rows[0][0] if self._rows else None


class CoreConnection(Protocol):
    """One transaction's connection, as `Database.reading()` / `writing()` yield it."""

    async def execute(self, statement: Executable, parameters: Params | None = None) -> Rows: ...


class EngineConnection:
    """`CoreConnection` on SQLAlchemy's async connection (PostgreSQL)."""

    __slots__ = ("connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def execute(self, statement: Executable, parameters: Params | None = None) -> Rows:
        result = await self.connection.execute(statement, parameters)
        rows = result.all() if result.returns_rows else []
        return Rows(rows, result.rowcount)
