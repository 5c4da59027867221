"""`ChatStore`: the only storage API the rest of streamkeep uses.

Every public method is one transaction (a read: one snapshot, see `Database.reading`);
it returns pydantic records, never rows, and a method that raises has written nothing.
Its methods live with their idea: `store.chats` (chats and their message trees),
`store.replies` (a reply's start, checkpoints and final write), `store.generations`
(running generations and their liveness), `store.accounts` (users, sessions, API
keys), `store.usage` (the tokens replies used) and `store.images` (images messages
carry). All of them write and read the
tables one way: Core statements, built once, in `Database.reading()` / `writing()`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from streamkeep.store.accounts import Accounts
from streamkeep.store.chats import Chats
from streamkeep.store.db import Database
from streamkeep.store.external_users import ExternalUsers
from streamkeep.store.generations import Generations
from streamkeep.store.images import Images
from streamkeep.store.replies import Replies
from streamkeep.store.usage import Usage

__all__ = ["ChatStore", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ChatStore(Chats, Replies, Generations, Accounts, ExternalUsers, Usage, Images):
    """Chats, their message trees and the generations writing into them; the users
    they belong to, and what their replies used.

    `clock` (timezone-aware) exists so tests can make timestamps tie or advance.
    """

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock
