"""Reading a generation's SSE frames in tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streamkeep.generation import Generation


@dataclass(frozen=True)
class Frame:
    seq: int
    data: Any  # the decoded chunk, or the string "[DONE]"

    @property
    def type(self) -> str:
        return "[DONE]" if self.data == "[DONE]" else str(self.data["type"])


def parse(raw: bytes) -> list[Frame]:
    frames = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        head, data = block.split(b"\n", 1)
        assert head.startswith(b"id: ") and data.startswith(b"data: "), block
        payload = data[len(b"data: ") :]
        value = "[DONE]" if payload == b"[DONE]" else orjson.loads(payload)
        frames.append(Frame(int(head[4:]), value))
    return frames


async def read_all(gen: Generation, after: int = 0) -> list[Frame]:
    async with asyncio.timeout(20):
        return parse(b"".join([c async for c in gen.subscribe(after)]))


async def read_until(
    stream: AsyncIterator[bytes], done: Callable[[list[Frame]], bool]
) -> list[Frame]:
    """Frames from `stream` until `done(frames so far)` holds (the stream stays open)."""
    frames: list[Frame] = []
    async with asyncio.timeout(20):
        async for chunk in stream:
            frames += parse(chunk)
            if done(frames):
                return frames
    raise AssertionError(f"stream ended first: {[f.type for f in frames]}")


def deltas(n: int) -> Callable[[list[Frame]], bool]:
    return lambda frames: sum(f.type == "text-delta" for f in frames) >= n


def text(frames: list[Frame]) -> str:
    return "".join(f.data["delta"] for f in frames if f.type == "text-delta")


def types(frames: list[Frame]) -> list[str]:
    return [f.type for f in frames]


def stored_text(parts: list[dict[str, Any]]) -> str:
    return "".join(p["text"] for p in parts if p["type"] == "text")
