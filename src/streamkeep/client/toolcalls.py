"""Tool calls in the terminal and in Markdown: one short line while a reply streams,
a readable block in an export.

A call is a stored tool part (AI SDK shape: `type` "tool-NAME", `state`, `input`,
`output` or `errorText`) or the same fields folded from the stream's chunks. Its states:
`input-streaming` (arguments still arriving), `input-available` (formed: running while
the reply streams, never run once it has ended), `output-available`, `output-error`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_ARGUMENTS = 80  # characters of the arguments on a call's line
MAX_RESULT = 120  # of its result or error
# An export shows a call on one line when its arguments and result are this short.
MAX_INLINE = 100

DONE, FAILED = "output-available", "output-error"


@dataclass(slots=True)
class ToolCall:
    """One call of a reply, as far as it has got."""

    call_id: str
    name: str
    state: str = "input-streaming"
    arguments: Any = None  # the parsed input (or the raw text the model sent)
    arguments_text: str = ""  # the raw text while it streams
    output: Any = None
    error: str | None = None

    @classmethod
    def from_part(cls, part: dict[str, Any]) -> ToolCall:
        kind = str(part.get("type", ""))
        name = str(part.get("toolName", "")) if kind == "dynamic-tool" else kind[5:]
        return cls(
            call_id=str(part.get("toolCallId", "")),
            name=name,
            state=str(part.get("state", "input-available")),
            arguments=part.get("input"),
            output=part.get("output"),
            error=part.get("errorText"),
        )

    def arguments_shown(self) -> str:
        """The arguments as JSON; as the model sent them while they stream, or when they
        did not parse (`tool-input-error` keeps the raw text)."""
        if self.arguments is None:
            return self.arguments_text or "{}"
        return self.arguments if isinstance(self.arguments, str) else as_json(self.arguments)

    def line(self, *, running: bool) -> str:
        """`⚙ name(arguments) → result`, `✗ name(arguments) → error`, or the call with
        `…` (running) or `(not run)` (a reply that ended before its result)."""
        head = f"{self.name}({shorten(self.arguments_shown(), MAX_ARGUMENTS)})"
        if self.state == DONE:
            return f"⚙ {head} → {shorten(result_text(self.output), MAX_RESULT)}"
        if self.state == FAILED:
            return f"✗ {head} → {shorten(self.error or 'failed', MAX_RESULT)}"
        return f"⚙ {head} …" if running else f"⚙ {head} (not run)"


def is_tool_part(part: dict[str, Any]) -> bool:
    kind = str(part.get("type", ""))
    return kind.startswith("tool-") or kind == "dynamic-tool"


def as_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def result_text(value: Any) -> str:
    """A result as a person reads it: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else as_json(value)


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with `…`."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def call_markdown(call: ToolCall) -> str:
    """A stored call in an export: one line when it is short, else fenced blocks."""
    args = call.arguments_shown()
    if call.state == DONE:
        outcome, label = result_text(call.output), "Result"
    elif call.state == FAILED:
        outcome, label = call.error or "failed", "Error"
    else:
        outcome, label = "", ""
    if _inline(args) and _inline(outcome):
        head = f"`{call.name}({args})`"
        if call.state == DONE:
            return f"⚙ {head} → `{outcome}`"
        if call.state == FAILED:
            return f"✗ {head} → error: `{outcome}`"
        return f"⚙ {head} (not run)"
    mark = "✗" if call.state == FAILED else "⚙"
    lines = [f"{mark} **{call.name}**" + ("" if label else " (not run)"), ""]
    lines += _fenced(args if call.arguments is None else _pretty(call.arguments))
    if label:
        body = _pretty(call.output) if call.state == DONE else outcome
        lines += ["", f"{label}:", "", *_fenced(body)]
    return "\n".join(lines)


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else as_json(value, indent=2)


def _inline(text: str) -> bool:
    return len(text) <= MAX_INLINE and "\n" not in text and "`" not in text


def _fenced(text: str) -> list[str]:
    # A fence longer than any run of backticks inside, so the block cannot end early.
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]
