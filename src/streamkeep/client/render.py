"""Render a reply's chunks in the terminal: live Markdown on a TTY, plain text otherwise."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from streamkeep.client.api import Chunk

# A reply whose finish reason is "length" looks finished; this says it is not.
CUT_AT_LIMIT = "cut at the token limit"


@dataclass(slots=True)
class ReplyOutcome:
    """What the stream said about the reply, for the caller's exit code and footer."""

    message_id: str | None = None
    status: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    text: list[str] = field(default_factory=list)


def _apply(outcome: ReplyOutcome, chunk: Chunk, reasoning: list[str], tools: list[str]) -> bool:
    """Fold one chunk into the outcome; True when the visible text changed."""
    data = chunk.data or {}
    kind = chunk.type
    if kind == "text-delta":
        outcome.text.append(data.get("delta", ""))
        return True
    if kind == "reasoning-delta":
        reasoning.append(data.get("delta", ""))
        return True
    if kind == "start":
        outcome.message_id = data.get("messageId")
    elif kind == "tool-input-available":
        args = json.dumps(data.get("input"), ensure_ascii=False)
        tools.append(f"⚙ {data.get('toolName')}({args})")
        return True
    elif kind == "message-metadata":
        meta = data.get("messageMetadata") or {}
        outcome.status = meta.get("status", outcome.status)
        outcome.usage = meta.get("usage", outcome.usage)
        outcome.finish_reason = meta.get("finishReason", outcome.finish_reason)
    elif kind == "finish":
        outcome.finish_reason = data.get("finishReason", outcome.finish_reason)
    elif kind == "error":
        outcome.error = data.get("errorText", "unknown error")
        outcome.status = "error"
    elif kind == "abort":
        outcome.status = "stopped"
    return False


def render_reply(chunks: Iterable[Chunk], console: Console, outcome: ReplyOutcome) -> None:
    """Consume `chunks`, showing the reply as it grows. `outcome` is filled in place so
    that a caller interrupted by Ctrl+C still has what arrived."""
    reasoning: list[str] = []
    tools: list[str] = []
    if not console.is_terminal:
        for chunk in chunks:
            before = len(outcome.text)
            _apply(outcome, chunk, reasoning, tools)
            for piece in outcome.text[before:]:
                console.file.write(piece)
                console.file.flush()
        console.file.write("\n")
        return

    def view() -> RenderableType:
        items: list[RenderableType] = []
        if reasoning:
            items.append(Text("".join(reasoning), style="dim italic"))
        items.extend(Text(t, style="cyan") for t in tools)
        items.append(Markdown("".join(outcome.text)))
        return Group(*items)

    # Live refreshes on its own thread at a capped rate, so rendering Markdown never
    # becomes the bottleneck of a fast stream.
    with Live(view(), console=console, refresh_per_second=12, transient=False) as live:
        for chunk in chunks:
            if _apply(outcome, chunk, reasoning, tools):
                live.update(view())
        live.update(view())


def usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    parts = [f"{usage.get('input_tokens', 0)} in", f"{usage.get('output_tokens', 0)} out"]
    if usage.get("reasoning_tokens"):
        parts.append(f"{usage['reasoning_tokens']} reasoning")
    suffix = " (estimated)" if usage.get("estimated") else ""
    return "tokens: " + ", ".join(parts) + suffix


def message_markdown(message: dict[str, Any]) -> str:
    """A stored message (AI SDK parts) as Markdown, for `chats show` and `export md`."""
    out: list[str] = []
    for part in message.get("parts") or []:
        kind = str(part.get("type", ""))
        if kind == "text":
            out.append(part.get("text", ""))
        elif kind == "reasoning":
            out.append("> " + part.get("text", "").replace("\n", "\n> "))
        elif kind.startswith("tool-"):
            args = json.dumps(part.get("input"), ensure_ascii=False)
            out.append(f"`{kind[5:]}({args})`")
    return "\n\n".join(out)
