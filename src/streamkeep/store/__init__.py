"""Storage: chats, their message trees and generations, and the users, sessions and
API keys they belong to, on SQLite or PostgreSQL.

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
    AlreadyExists,
    EventSeqMoved,
    GenerationConflict,
    InvalidOperation,
    NotFound,
    StoreError,
)
from streamkeep.store.records import (
    ApiKeyRecord,
    ChatRecord,
    GenerationRecord,
    GenerationStatus,
    MessageRecord,
    MessageStatus,
    Role,
    SessionRecord,
    UsageGroup,
    UsageRow,
    UsageTotals,
    UserRecord,
)
from streamkeep.store.repository import ChatStore

__all__ = [
    "AlreadyExists",
    "ApiKeyRecord",
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
    "SessionRecord",
    "StoreError",
    "UsageGroup",
    "UsageRow",
    "UsageTotals",
    "UserRecord",
]
