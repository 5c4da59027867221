"""Fold a stream of events into the final assistant message.

Consecutive text deltas extend one text part, consecutive reasoning deltas one
reasoning part; a tool call becomes a part where its `ToolCallStart` arrived, so the
order the user saw (text, call, more text) is the order that is stored.

A `ReasoningSignature` signs the reasoning part it ends (or, when the block had no
text, stands as an empty signed part) and closes it: reasoning after it is another
part, as it is another block to send back. `RedactedReasoning` is a part of its own.
"""

from __future__ import annotations

from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import (
    Completion,
    Part,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolCallPart,
)


class Accumulator:
    __slots__ = ("_arguments", "_calls", "_completion", "_parts", "_pieces", "_sealed")

    def __init__(self) -> None:
        self._completion = Completion()
        self._parts: list[Part] = self._completion.parts
        # call_id -> the part standing in for it until ToolCallComplete arrives
        self._calls: dict[str, ToolCallPart] = {}
        # Deltas of the last part when it is text or reasoning, joined on demand: adding
        # to an attribute with `+=` copies the whole string, quadratic on long answers.
        self._pieces: list[str] = []
        # call_id -> argument deltas of a call not complete yet (joined on read, as above)
        self._arguments: dict[str, list[str]] = {}
        # True when the last part is a signed or redacted block: no delta extends it.
        self._sealed = False

    def add(self, event: StreamEvent) -> None:
        parts = self._parts
        cls = type(event)
        if cls is TextDelta or cls is ReasoningDelta:
            kind = TextPart if cls is TextDelta else ReasoningPart
            if self._sealed or not (parts and type(parts[-1]) is kind):
                self._flush()
                self._sealed = False
                parts.append(kind(""))
            self._pieces.append(event.text)  # type: ignore[union-attr]
            return
        self._flush()
        if isinstance(event, ReasoningSignature):
            self._sign(event.signature)
        elif isinstance(event, RedactedReasoning):
            parts.append(ReasoningPart("", redacted=event.data))
            self._sealed = True
        elif isinstance(event, ToolCallStart):
            part = ToolCallPart(ToolCall(id=event.call_id, name=event.name, arguments={}))
            self._calls[event.call_id] = part
            self._arguments[event.call_id] = []
            parts.append(part)
        elif isinstance(event, ToolCallDelta):
            pieces = self._arguments.get(event.call_id)
            if pieces is not None:
                pieces.append(event.arguments_delta)
        elif isinstance(event, ToolCallComplete):
            pending = self._calls.get(event.call.id)
            self._arguments.pop(event.call.id, None)
            if pending is None:
                parts.append(ToolCallPart(event.call))
            else:
                pending.call = event.call
        elif isinstance(event, UsageReport):
            if event.final:
                self._completion.usage = event.usage
            else:
                self._completion.partial_usage = event.usage
        elif isinstance(event, Finish):
            c = self._completion
            c.finish_reason = event.reason
            c.response_id = event.response_id or c.response_id
            c.model = event.model or c.model
        elif isinstance(event, StreamError):
            c = self._completion
            c.finish_reason = "error"
            c.error = event.error.message
            c.response_id = event.response_id or c.response_id
            c.model = event.model or c.model

    def _sign(self, signature: str) -> None:
        last = self._parts[-1] if self._parts else None
        if type(last) is ReasoningPart and not self._sealed:
            last.signature = signature
        else:  # a block with no text: signed all the same, and sent back
            self._parts.append(ReasoningPart("", signature=signature))
        self._sealed = True

    def _flush(self) -> None:
        if self._pieces:
            last = self._parts[-1]
            assert isinstance(last, TextPart | ReasoningPart)
            last.text += "".join(self._pieces)
            self._pieces = []

    def unfinished_calls(self) -> frozenset[str]:
        """The ids of the calls that started but never completed (so far, or for good
        when the stream was cut: a stop, a failure)."""
        return frozenset(self._arguments)

    def result(self) -> Completion:
        """The message so far (safe to call mid-stream, e.g. for checkpoints)."""
        self._flush()
        for call_id, pieces in self._arguments.items():
            if pieces:
                call = self._calls[call_id].call
                call.raw_arguments += "".join(pieces)
                pieces.clear()
        return self._completion
