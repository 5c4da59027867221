"""Usage: the tokens assistant replies used, summed per user, model, UTC day or API
key, in one aggregate statement. Part of `ChatStore` (see `store.repository`).

A reply counts when its `usage` is a JSON object (a damaged value, which
`MessageRecord` reads as None, does not), whatever its status: a stopped reply used
tokens too. A count in it that is not a whole JSON number counts 0, as does a missing
one; `estimated` counts when it is JSON `true`. So the sums are exactly those of the
records the store reads.

`usage` is JSON text on SQLite and JSONB on PostgreSQL, so taking it apart differs
per dialect (`_Json`); the rest of the statement is shared. Each variant (dialect,
grouping, which filters) is built once: SQLite's connections compile every statement
object once (`store.direct`), and PostgreSQL's cache keys on the statement too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
)

from streamkeep.store.errors import InvalidOperation
from streamkeep.store.models import API_KEYS, CHATS, MESSAGES, USERS
from streamkeep.store.records import UsageGroup, UsageRow

if TYPE_CHECKING:
    from streamkeep.store.db import Database

SINGLE_USER = "(single-user)"
NO_KEY = "(no key)"
NO_MODEL = "(unknown)"
USAGE_GROUPS: tuple[UsageGroup, ...] = ("user", "model", "day", "key")
TOKEN_COUNTS = ("input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens")

_m = MESSAGES.c
_USAGE = _m.usage


def _sql(fragment: str) -> ColumnElement[Any]:
    """A constant of the statement. Literal, not a bound parameter: PostgreSQL tells a
    GROUP BY expression from the selected one only when both spell it alike."""
    return literal_column(fragment)


@dataclass(frozen=True, slots=True)
class _Json:
    """What the statement needs of `messages.usage`, in one dialect's SQL."""

    #: the reply has usage to count: a JSON object
    is_object: ColumnElement[bool]
    #: a token count in it as an integer (0 when not a whole number)
    count: Callable[[str], ColumnElement[int]]
    #: its `estimated` is true
    estimated: ColumnElement[bool]
    #: the UTC day of `messages.created_at`, YYYY-MM-DD
    day: ColumnElement[str]


def _sqlite() -> _Json:
    def count(name: str) -> ColumnElement[int]:
        path = _sql(f"'$.{name}'")
        return case(
            (func.json_type(_USAGE, path) == _sql("'integer'"), func.json_extract(_USAGE, path)),
            else_=_sql("0"),
        )

    # json_type fails on text that is not JSON: json_valid first (CASE checks in order).
    valid = case((func.json_valid(_USAGE) == _sql("1"), func.json_type(_USAGE)))
    return _Json(
        is_object=valid == _sql("'object'"),
        count=count,
        estimated=func.json_type(_USAGE, _sql("'$.estimated'")) == _sql("'true'"),
        # Stored as naive UTC text ("2026-01-02 03:04:05.000000"): its date is the UTC day.
        day=func.date(_m.created_at, type_=String()),
    )


def _postgresql() -> _Json:
    def count(name: str) -> ColumnElement[int]:
        key = _sql(f"'{name}'")
        value = _USAGE.op("->>")(key)
        # A JSON number may be 2.5 or 1e30: only whole ones that fit a bigint are cast.
        number = func.jsonb_typeof(_USAGE.op("->")(key)) == _sql("'number'")
        whole = value.op("~")(_sql("'^-?[0-9]{1,18}$'"))
        return case((number & whole, cast(value, BigInteger)), else_=_sql("0"))

    return _Json(
        is_object=func.jsonb_typeof(_USAGE) == _sql("'object'"),
        count=count,
        estimated=_USAGE.op("->")(_sql("'estimated'")) == _sql("'true'::jsonb"),
        day=func.to_char(func.timezone(_sql("'UTC'"), _m.created_at), _sql("'YYYY-MM-DD'")),
    )


_DIALECTS = {"sqlite": _sqlite, "postgresql": _postgresql}


@functools.cache
def _statement(
    dialect: str, group_by: UsageGroup, start: bool, end: bool, user: bool
) -> Select[Any]:
    """The statement for one grouping, with the filters asked for (as bound
    parameters: `b_start`, `b_end`, `b_user`). Each row: the group's id and label,
    then the sums."""
    json = _DIALECTS[dialect]()
    source: FromClause = MESSAGES.join(CHATS, CHATS.c.id == _m.chat_id)
    group_id: ColumnElement[Any]
    label: ColumnElement[Any]
    if group_by == "user":
        source = source.outerjoin(USERS, USERS.c.id == CHATS.c.user_id)
        group_id, label = CHATS.c.user_id, USERS.c.name
    elif group_by == "key":
        source = source.outerjoin(API_KEYS, API_KEYS.c.id == _m.api_key_id)
        group_id, label = _m.api_key_id, API_KEYS.c.prefix
    elif group_by == "model":
        group_id = label = _m.model
    else:
        group_id = label = json.day
    counts = [cast(func.sum(json.count(name)), BigInteger).label(name) for name in TOKEN_COUNTS]
    estimated = cast(func.sum(case((json.estimated, _sql("1")), else_=_sql("0"))), Integer)
    stmt = (
        select(
            group_id.label("group_id"),
            label.label("label"),
            func.count().label("messages"),
            *counts,
            estimated.label("estimated_messages"),
        )
        .select_from(source)
        .where(_m.role == _sql("'assistant'"), _USAGE.is_not(None), json.is_object)
        .group_by(group_id, label)
    )
    if start:
        stmt = stmt.where(_m.created_at >= bindparam("b_start", type_=_m.created_at.type))
    if end:
        stmt = stmt.where(_m.created_at < bindparam("b_end", type_=_m.created_at.type))
    if user:
        stmt = stmt.where(CHATS.c.user_id == bindparam("b_user"))
    return stmt


# Labels of a group without a name: chats of no user, replies of no key (or of a key
# since deleted), and, should one have none, of no model.
_UNNAMED = {"user": SINGLE_USER, "key": NO_KEY}


class Usage:
    """`ChatStore`'s usage report."""

    _db: Database

    async def usage(
        self,
        group_by: UsageGroup,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        user_id: str | None = None,
    ) -> list[UsageRow]:
        """The usage of assistant replies per `group_by` (see the module docstring for
        what counts): the user owning the chat (its name; chats of the single-user
        mode are "(single-user)"), the reply's model, its UTC day (YYYY-MM-DD) or the
        API key it was asked with (its prefix; "(no key)"). Only replies created at
        `start` or later and before `end`, in chats of `user_id` when given. Groups
        come sorted by label, the unnamed one first."""
        if group_by not in USAGE_GROUPS:
            raise InvalidOperation(f"usage is grouped by one of {', '.join(USAGE_GROUPS)}")
        stmt = _statement(
            self._db.dialect, group_by, start is not None, end is not None, user_id is not None
        )
        params = {"b_start": start, "b_end": end, "b_user": user_id}
        async with self._db.reading() as conn:
            rows = (await conn.execute(stmt, params)).all()
        found = [
            UsageRow(
                group=_UNNAMED.get(group_by, NO_MODEL) if row.label is None else row.label,
                group_id=row.group_id,
                messages=row.messages,
                **{name: getattr(row, name) for name in TOKEN_COUNTS},
                estimated=row.estimated_messages > 0,
                estimated_messages=row.estimated_messages,
            )
            for row in rows
        ]
        return sorted(found, key=lambda r: (r.group_id is not None, r.group))
