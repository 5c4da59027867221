"""Holding a real async method mid-call, to order a race deterministically."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


class Gate:
    """Calls of the wrapped method wait at the gate, then run the real method.

    `entered` is set once a call waits; `open()` lets every waiting and later call
    through. The method itself is the real one: only its start is held back.
    """

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.calls = 0

    def open(self) -> None:
        self.released.set()

    async def wait_entered(self) -> None:
        async with asyncio.timeout(20):
            await self.entered.wait()


def hold(request: pytest.FixtureRequest, obj: object, name: str) -> Gate:
    """Put a gate before `obj.name` (an async method of that instance).

    The gate opens at the test's end whatever happened, before its fixtures are torn
    down: a failing test must not leave a call held (a manager's shutdown would wait
    for it forever).
    """
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    real = getattr(obj, name)
    gate = Gate()
    request.addfinalizer(gate.open)

    async def held(*args: Any, **kwargs: Any) -> Any:
        gate.calls += 1
        gate.entered.set()
        await gate.released.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(obj, name, held)
    return gate
