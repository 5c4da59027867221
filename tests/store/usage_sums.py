"""Usage as the sum over every stored message, added up here in Python: what
`ChatStore.usage` must equal, however it gets there.

The ids come from a plain SELECT; each message is read through the store as the API
reads it (`get_message`, whose record reads a damaged `usage` as None), and grouped by
the rules of docs/api.md, not by the store's SQL.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from streamkeep.store import ChatStore, Database

COUNTS = ("input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens")


def _count(value: Any) -> int:
    # Only whole JSON numbers count (True is an int to Python, not to JSON).
    return value if type(value) is int else 0


async def summed_usage(
    store: ChatStore,
    db: Database,
    group_by: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    user_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """{group: {"messages", the token counts, "estimated", "estimated_messages"}}."""
    async with db.engine.connect() as conn:
        ids = [row[0] for row in (await conn.execute(text("SELECT id FROM messages"))).all()]
    users = {u.id: u.name for u in await store.list_users()}
    prefixes = {k.id: k.prefix for u in users for k in await store.list_api_keys(u)}
    sums: dict[str, dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(("messages", *COUNTS, "estimated_messages"), 0)
    )
    for message_id in ids:
        message = await store.get_message(message_id)
        if message.role != "assistant" or message.usage is None:
            continue
        if (start is not None and message.created_at < start) or (
            end is not None and message.created_at >= end
        ):
            continue
        owner = (await store.get_chat(message.chat_id)).user_id
        if user_id is not None and owner != user_id:
            continue
        group = {
            "user": users[owner] if owner is not None else "(single-user)",
            "model": message.model or "(unknown)",
            "day": message.created_at.astimezone(UTC).date().isoformat(),
            "key": prefixes[message.api_key_id] if message.api_key_id else "(no key)",
        }[group_by]
        sums[group]["messages"] += 1
        for name in COUNTS:
            sums[group][name] += _count(message.usage.get(name))
        sums[group]["estimated_messages"] += message.usage.get("estimated") is True
    return {
        group: {**counts, "estimated": counts["estimated_messages"] > 0}
        for group, counts in sums.items()
    }


def as_sums(rows: Any) -> dict[str, dict[str, Any]]:
    """`ChatStore.usage`'s rows (records, or the API's JSON items) in `summed_usage`'s
    shape."""
    out = {}
    for row in rows:
        item = row if isinstance(row, dict) else row.model_dump(mode="json")
        out[item["group"]] = {k: v for k, v in item.items() if k != "group"}
    return out
