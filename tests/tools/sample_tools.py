"""Tools for `load_python_tools` to find by import path (see test_registry.py)."""

from __future__ import annotations

from streamkeep.tools import tool

NOT_CALLABLE = 42


def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@tool(name="sample_shout", timeout=3)
async def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


def untyped(a, b: int) -> int:  # type: ignore[no-untyped-def]
    """A parameter without an annotation."""
    return b


class Units:
    @staticmethod
    def metres(feet: float) -> float:
        """Feet to metres."""
        return feet * 0.3048
