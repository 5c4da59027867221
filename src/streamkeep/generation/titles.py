"""A chat's title, from its first user message.

Every way a chat starts without a title ends up here: the gateway titles the chat it
creates for a call, and a chat created empty (`POST /api/chats` without a title,
useChat's first message) gets its title when its first user message is stored
(`ChatStore.start_reply(title=...)`, which never replaces a title the chat has).
"""

from __future__ import annotations

TITLE_CHARS = 80


def title_from(text: str) -> str | None:
    """`text` on one line (each run of whitespace one space), cut to `TITLE_CHARS`
    with an ellipsis; None for blank text."""
    flat = " ".join(text.split())
    if not flat:
        return None
    return flat if len(flat) <= TITLE_CHARS else flat[: TITLE_CHARS - 1] + "…"
