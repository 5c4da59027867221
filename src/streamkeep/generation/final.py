"""A reply's final write: what is stored when a generation ends, and storing it.

`FinalWrite` is the whole outcome as one value, built once by the generation; the
generation tries it a few times (`store_final`), and should every attempt fail the
checkpointer keeps it and tries again on each tick (`write_final`), so the content
survives while the process lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streamkeep.generation.parts import UIPart, as_json
from streamkeep.llm.types import FinishReason
from streamkeep.store.errors import NotFound

if TYPE_CHECKING:
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)

EndStatus = Literal["complete", "stopped", "error", "interrupted"]

# Bounded retries of the final write in the generation's own task; after that the
# checkpointer keeps retrying every tick.
FINAL_WRITE_ATTEMPTS = 5
FINAL_WRITE_FIRST_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class FinalWrite:
    """Everything `ChatStore.finish_reply` stores of one ended reply."""

    generation_id: str
    message_id: str
    status: EndStatus
    parts: list[UIPart]
    usage: dict[str, Any]
    finish_reason: FinishReason | None
    error: str | None
    # The last event id the generation uses (None: it does not number its chat's).
    event_seq: int | None
    # Through a fallback alias: the model that answered, and the ones skipped before.
    answered_by: str | None = None
    fallbacks: list[dict[str, Any]] | None = None


async def store_final(
    store: ChatStore, write: FinalWrite, *, retry_later: Callable[[FinalWrite], None]
) -> bool:
    """Try `write` a few times, with backoff. True when the final row is in the
    database; False when it failed every attempt (it is handed to `retry_later`) or
    the chat was deleted meanwhile."""
    delay = FINAL_WRITE_FIRST_DELAY
    for attempt in range(1, FINAL_WRITE_ATTEMPTS + 1):
        result = await _write_once(store, write, attempt=attempt)
        if result != "failed":
            return result == "stored"
        if attempt < FINAL_WRITE_ATTEMPTS:
            await asyncio.sleep(delay)
            delay *= 2
    logger.error(
        "could not store message %s after %d attempts; retrying in the background",
        write.message_id,
        FINAL_WRITE_ATTEMPTS,
    )
    retry_later(write)
    return False


async def write_final(store: ChatStore, write: FinalWrite, *, attempt: int = 1) -> bool:
    """One try of a message's final write; True when nothing is left to do."""
    return await _write_once(store, write, attempt=attempt) != "failed"


async def _write_once(
    store: ChatStore, write: FinalWrite, *, attempt: int
) -> Literal["stored", "vanished", "failed"]:
    try:
        await store.finish_reply(
            generation_id=write.generation_id,
            message_id=write.message_id,
            status=write.status,
            parts=as_json(write.parts),
            usage=write.usage,
            finish_reason=write.finish_reason,
            error=write.error,
            event_seq=write.event_seq,
            answered_by=write.answered_by,
            fallbacks=write.fallbacks,
        )
    except NotFound:
        # The chat was deleted mid-generation: there is nothing left to store it in.
        logger.info("message %s vanished before its final write", write.message_id)
        return "vanished"
    except Exception as exc:  # the database is down or busy: retried by the caller
        logger.warning(
            "final write of message %s failed (attempt %d): %s", write.message_id, attempt, exc
        )
        return "failed"
    return "stored"
