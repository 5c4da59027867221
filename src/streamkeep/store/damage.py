"""Reading rows damaged by other means: a read degrades, it never fails.

streamkeep itself writes only text UTF-8 can encode (see `streamkeep.text`), but a
database may hold rows written before that rule, or by other tools: SQLite keeps any
bytes in a TEXT column and any text in a JSON one. Each kind of damage reads as the
nearest sound value, with a warning in the log:

- text that is not UTF-8 (SQLite): the bad bytes read as U+FFFD (`decode_text`, the
  connections' text factory);
- a JSON value with a lone surrogate escape (`"\\ud800"`, SQLite): U+FFFD, as a
  provider's answer is repaired (`load_json`, the engines' JSON deserializer); a
  value that is not JSON at all reads as null;
- a message's `parts` that are not a list of objects: the objects in it, or none;
  `usage` that is not an object: null (`clean_parts`, `clean_usage`, run by
  `MessageRecord` and prompt building); `fallbacks` that are not a list: null, and
  only its objects (`clean_fallbacks`).

Cost: `load_json` is orjson (faster than the stdlib's default) until orjson refuses
a value; `decode_text` is a Python call per TEXT value read from SQLite (C's own
decoding would fail a whole query on one bad byte).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from streamkeep.text import loads_repairing

logger = logging.getLogger(__name__)


def decode_text(data: bytes) -> str:
    """SQLite TEXT bytes as str, invalid UTF-8 replaced (`sqlite3` text factory)."""
    return data.decode("utf-8", "replace")


def load_json(document: str) -> Any:
    """A stored JSON value; repaired when orjson refuses it, null when it is not JSON."""
    try:
        return orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        value = loads_repairing(document)
        if value is None:
            logger.warning("a stored JSON value is not JSON (%s): read as null", exc)
        return value


def clean_parts(value: Any) -> list[dict[str, Any]]:
    """A message's stored parts as a list of objects, whatever was stored."""
    if type(value) is list and all(type(p) is dict for p in value):
        return value
    if value is not None:
        logger.warning("stored message parts are not a list of objects: %.200r", value)
    if isinstance(value, list):
        return [p for p in value if isinstance(p, dict)]
    return []


def clean_usage(value: Any) -> dict[str, Any] | None:
    """A message's stored usage as an object, or None."""
    if value is None or type(value) is dict:
        return value
    logger.warning("stored message usage is not an object: %.200r", value)
    return None


def clean_fallbacks(value: Any) -> list[dict[str, Any]] | None:
    """A message's stored `fallbacks` as a list of objects, or null."""
    if value is None or (type(value) is list and all(type(p) is dict for p in value)):
        return value
    logger.warning("stored message fallbacks are not a list of objects: %.200r", value)
    return [p for p in value if isinstance(p, dict)] if isinstance(value, list) else None
