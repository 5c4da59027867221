"""Storage: chats, their message trees and generations, on SQLite or PostgreSQL.

    db = Database.from_url(settings.resolved_database_url)
    await db.upgrade()              # apply migrations (safe at every start)
    store = ChatStore(db)
    ...
    await db.dispose()

`ChatStore` is the whole API; it returns the pydantic records of `records` and raises
the errors of `errors`.
"""

from __future__ import annotations

from streamkeep.store.db import Database
from streamkeep.store.errors import (
    EventSeqMoved,
    GenerationConflict,
    InvalidOperation,
    NotFound,
    StoreError,
)
from streamkeep.store.records import (
    ChatRecord,
    GenerationRecord,
    GenerationStatus,
    MessageRecord,
    MessageStatus,
    Role,
)
from streamkeep.store.repository import ChatStore

__all__ = [
    "ChatRecord",
    "ChatStore",
    "Database",
    "EventSeqMoved",
    "GenerationConflict",
    "GenerationRecord",
    "GenerationStatus",
    "InvalidOperation",
    "MessageRecord",
    "MessageStatus",
    "NotFound",
    "Role",
    "StoreError",
]
