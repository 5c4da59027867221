"""Opaque pagination cursors for the chat list: the (updated_at, id) of the last item."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from streamkeep.store.errors import InvalidOperation


def encode(updated_at: datetime, chat_id: str) -> str:
    raw = json.dumps([updated_at.isoformat(), chat_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, chat_id = json.loads(raw)
        after = datetime.fromisoformat(when)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidOperation("invalid cursor") from exc
    if after.tzinfo is None or not isinstance(chat_id, str):
        raise InvalidOperation("invalid cursor")
    return after, chat_id
