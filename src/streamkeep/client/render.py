"""Render a reply's chunks in the terminal: live Markdown on a TTY, plain text otherwise,
with a line per tool call (`streamkeep.client.toolcalls`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from streamkeep.client.api import Chunk
from streamkeep.client.toolcalls import DONE, FAILED, ToolCall, call_markdown, is_tool_part

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


@dataclass(slots=True)
class _Block:
    """A run of text or reasoning, as one block of the stream."""

    kind: str  # "text" | "reasoning"
    pieces: list[str] = field(default_factory=list)


class _Transcript:
    """The reply so far, in the order it was told: blocks of text and tool calls."""

    def __init__(self, outcome: ReplyOutcome) -> None:
        self.outcome = outcome
        self.items: list[_Block | ToolCall] = []
        self._calls: dict[str, ToolCall] = {}
        self._block_id = ""  # the id of the open text or reasoning block
        self.ended = False

    def apply(self, chunk: Chunk) -> bool:
        """Fold one chunk in; True when what is shown changed."""
        data = chunk.data or {}
        kind = chunk.type
        if kind in ("text-delta", "reasoning-delta"):
            delta = str(data.get("delta", ""))
            self._block(kind.split("-")[0], str(data.get("id", ""))).pieces.append(delta)
            if kind == "text-delta":
                self.outcome.text.append(delta)
            return True
        if kind.startswith("tool-"):
            return self._tool(kind, data)
        outcome = self.outcome
        if kind == "start":
            outcome.message_id = data.get("messageId")
        elif kind == "message-metadata":
            meta = data.get("messageMetadata") or {}
            outcome.status = meta.get("status", outcome.status)
            outcome.usage = meta.get("usage", outcome.usage)
            outcome.finish_reason = meta.get("finishReason", outcome.finish_reason)
        elif kind == "finish":
            outcome.finish_reason = data.get("finishReason", outcome.finish_reason)
            self.ended = True
            return True  # a call still without a result is now one never run
        elif kind == "error":
            outcome.error = data.get("errorText", "unknown error")
            outcome.status = "error"
        elif kind == "abort":
            outcome.status = "stopped"
        return False

    def _block(self, kind: str, block_id: str) -> _Block:
        last = self.items[-1] if self.items else None
        if isinstance(last, _Block) and last.kind == kind and self._block_id == block_id:
            return last
        self._block_id = block_id
        block = _Block(kind)
        self.items.append(block)
        return block

    def _tool(self, kind: str, data: dict[str, Any]) -> bool:
        call_id = str(data.get("toolCallId", ""))
        call = self._calls.get(call_id)
        if call is None:
            call = ToolCall(call_id, str(data.get("toolName", "")))
            self._calls[call_id] = call
            self.items.append(call)
        if kind == "tool-input-delta":
            call.arguments_text += str(data.get("inputTextDelta", ""))
        elif kind == "tool-input-available":
            call.state, call.arguments = "input-available", data.get("input")
        elif kind == "tool-input-error":
            call.state, call.arguments = FAILED, data.get("input")
            call.error = str(data.get("errorText", "invalid arguments"))
        elif kind == "tool-output-available":
            call.state, call.output = DONE, data.get("output")
        elif kind == "tool-output-error":
            call.state, call.error = FAILED, str(data.get("errorText", ""))
        return True


def render_reply(
    chunks: Iterable[Chunk],
    console: Console,
    outcome: ReplyOutcome,
    *,
    notes: Console | None = None,
) -> None:
    """Consume `chunks`, showing the reply as it grows. `outcome` is filled in place so
    that a caller interrupted by Ctrl+C still has what arrived.

    On a terminal the reply is live Markdown with a line per tool call, updated from
    "formed" to its result. Otherwise `console` gets only the answer's text (blocks
    apart by a blank line), and `notes` (default: `console`) a line per tool call once
    it has its result, or once the reply has ended without one."""
    transcript = _Transcript(outcome)
    if not console.is_terminal:
        _render_plain(chunks, transcript, console, notes or console)
        return

    def view() -> RenderableType:
        items: list[RenderableType] = []
        for item in transcript.items:
            if isinstance(item, ToolCall):
                items.append(_call_text(item, running=not transcript.ended))
            elif item.kind == "reasoning":
                items.append(Text("".join(item.pieces), style="dim italic"))
            else:
                items.append(Markdown("".join(item.pieces)))
        return Group(*items)

    # Live refreshes on its own thread at a capped rate, so rendering Markdown never
    # becomes the bottleneck of a fast stream.
    with Live(view(), console=console, refresh_per_second=12, transient=False) as live:
        try:
            for chunk in chunks:
                if transcript.apply(chunk):
                    live.update(view())
        finally:
            transcript.ended = True  # Ctrl+C included: a call cut short shows as not run
            live.update(view())


def _call_text(call: ToolCall, *, running: bool) -> Text:
    style = {DONE: "cyan", FAILED: "red"}.get(call.state, "dim cyan")
    return Text(call.line(running=running), style=style)


def _render_plain(
    chunks: Iterable[Chunk], transcript: _Transcript, out: Console, notes: Console
) -> None:
    shown: dict[int, int] = {}  # item index -> pieces written (a text block), or 1 (a call)
    wrote_text = False

    def flush() -> None:
        nonlocal wrote_text
        for i, item in enumerate(transcript.items):
            if isinstance(item, ToolCall):
                if i not in shown and (item.state in (DONE, FAILED) or transcript.ended):
                    shown[i] = 1
                    notes.file.write(item.line(running=False) + "\n")
                    notes.file.flush()
                continue
            if item.kind != "text":
                continue
            done = shown.get(i)
            if done is None and wrote_text:
                out.file.write("\n\n")  # a block of a later step
            for piece in item.pieces[done or 0 :]:
                out.file.write(piece)
                wrote_text = True
            shown[i] = len(item.pieces)
        out.file.flush()

    try:
        for chunk in chunks:
            if transcript.apply(chunk):
                flush()
    finally:
        transcript.ended = True
        flush()
    out.file.write("\n")


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
        elif is_tool_part(part):
            out.append(call_markdown(ToolCall.from_part(part)))
    return "\n\n".join(out)
