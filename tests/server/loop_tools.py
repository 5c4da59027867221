"""Python tools the tool-loop tests load by import path (`tools.python` setting)."""

from __future__ import annotations

import asyncio

#: What the slow tool saw: "started", then "cancelled" when a stop cancels it.
EVENTS: list[str] = []
#: Set when the slow tool starts (a test makes a new one for its own event loop).
STARTED = asyncio.Event()


async def slow(seconds: float) -> str:
    """Wait, then say so (a tool to stop, or to time out, while it runs)."""
    EVENTS.append("started")
    STARTED.set()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        EVENTS.append("cancelled")
        raise
    return f"waited {seconds:g} s"


def boom(reason: str) -> str:
    """Fail with the reason given."""
    raise RuntimeError(f"boom: {reason}")


def measure() -> dict[str, float]:
    """Give readings some of which are not numbers (JSON has no NaN)."""
    return {"ok": 1.5, "nan": float("nan"), "inf": float("inf")}


def echo(text: str) -> dict[str, str]:
    """Give the text back."""
    return {"text": text}
