"""The consoles the chat commands write to."""

from __future__ import annotations

from rich.console import Console


def consoles() -> tuple[Console, Console]:
    """stdout for answers and stderr for notes, with rich's automatic highlighting off:
    it styles numbers and URLs inside words, which splits an id such as `chat_…-0`
    into styled runs that no longer read, search or copy as one."""
    return Console(highlight=False), Console(stderr=True, highlight=False)
