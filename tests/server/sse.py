"""Reading an HTTP SSE response in tests: events with their `id:` and decoded data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson


@dataclass(frozen=True)
class Event:
    seq: int | None
    data: Any  # the decoded JSON chunk, or the string "[DONE]"

    @property
    def type(self) -> str:
        return "[DONE]" if self.data == "[DONE]" else str(self.data["type"])


def parse_block(block: str) -> Event:
    seq: int | None = None
    data = ""
    for line in block.split("\n"):
        field, _, value = line.partition(": ")
        if field == "id":
            seq = int(value)
        elif field == "data":
            data += value
    return Event(seq, "[DONE]" if data == "[DONE]" else orjson.loads(data))


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The response's events, as they arrive."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            # Comment lines (": ping", the keep-alive) are skipped, as SSE parsers do.
            lines = [line for line in block.split("\n") if line and not line.startswith(":")]
            if lines:
                yield parse_block("\n".join(lines))


async def read_all(response: httpx.Response) -> list[Event]:
    return [event async for event in events(response)]


def text_of(evts: list[Event]) -> str:
    return "".join(e.data["delta"] for e in evts if e.type == "text-delta")


async def until(stream: AsyncIterator[Event], kind: str) -> list[Event]:
    """Events up to and including the first of type `kind`."""
    seen = []
    async for event in stream:
        seen.append(event)
        if event.type == kind:
            return seen
    raise AssertionError(f"the stream ended without a {kind!r} event: {seen}")
