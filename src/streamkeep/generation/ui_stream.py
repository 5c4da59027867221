"""Typed llm events -> the Vercel AI SDK UI Message Stream protocol (v1) as SSE frames.

A thin last layer: `UIStreamEncoder` turns each event into zero or more chunk payloads
(JSON bytes) and keeps the only state the protocol needs, the open text or reasoning
block. The generation then numbers them (`streamkeep.sse.numbered_frames`): every frame is
`id: <seq>\\ndata: <json>\\n\\n`, built once, stored in the event log and written as-is
to every subscriber.

Chunk order of one generation:
    start, start-step,
    (text-start text-delta* text-end | reasoning-* | tool-input-start tool-input-delta*
     tool-input-available|tool-input-error | tool-output-available|tool-output-error)*,
    (finish-step, start-step, ...)*   a reply with tools: one step per model call
    [error], finish-step, message-metadata, [abort], finish, [DONE]
"""

from __future__ import annotations

from typing import Any

import orjson

from streamkeep.generation.steps import ReplyEvent, StepFinish, StepStart, ToolOutput
from streamkeep.llm.events import (
    ReasoningDelta,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
)
from streamkeep.llm.types import FinishReason
from streamkeep.sse import DONE
from streamkeep.sse import HEADERS as SSE_HEADERS

# The AI SDK's own response headers for this protocol (`createUIMessageStreamResponse`).
HEADERS = {
    "content-type": "text/event-stream",
    **SSE_HEADERS,
    "x-vercel-ai-ui-message-stream": "v1",
}

# The protocol's finish reasons lack "unknown".
_STREAM_FINISH_REASONS = frozenset(
    ("stop", "length", "content-filter", "tool-calls", "error", "other")
)

# The most frames `UIStreamEncoder.end` gives: a block's end, finish-step,
# message-metadata, abort, finish, [DONE].
MAX_END_FRAMES = 6

_dumps = orjson.dumps
_DELTA_TYPES = {"text": "text-delta", "reasoning": "reasoning-delta"}


def _output_chunk(event: ToolOutput) -> dict[str, Any]:
    if event.error is not None:
        return {"type": "tool-output-error", "toolCallId": event.call_id, "errorText": event.error}
    return {"type": "tool-output-available", "toolCallId": event.call_id, "output": event.output}


def stream_finish_reason(reason: FinishReason | None) -> str | None:
    if reason is None:
        return None
    return reason if reason in _STREAM_FINISH_REASONS else "other"


class UIStreamEncoder:
    """Stateful encoder of one generation's chunks."""

    __slots__ = ("_block_id", "_block_type", "_blocks")

    def __init__(self) -> None:
        self._blocks = 0
        self._block_type: str | None = None  # "text" | "reasoning" while a block is open
        self._block_id = ""

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]:
        return [
            _dumps({"type": "start", "messageId": message_id, "messageMetadata": metadata}),
            b'{"type":"start-step"}',
        ]

    def encode(self, event: ReplyEvent) -> list[bytes]:
        """The chunks for one event (Usage / Finish / StreamError give none)."""
        if isinstance(event, TextDelta):
            return self._delta("text", event.text)
        if isinstance(event, ReasoningDelta):
            return self._delta("reasoning", event.text)
        if isinstance(event, ToolCallStart):
            out = self._close_block()
            out.append(
                _dumps(
                    {
                        "type": "tool-input-start",
                        "toolCallId": event.call_id,
                        "toolName": event.name,
                    }
                )
            )
            return out
        if isinstance(event, ToolCallDelta):
            if not event.arguments_delta:
                return []
            chunk = {
                "type": "tool-input-delta",
                "toolCallId": event.call_id,
                "inputTextDelta": event.arguments_delta,
            }
            return [_dumps(chunk)]
        if isinstance(event, ToolCallComplete):
            return self._tool_complete(event)
        if isinstance(event, ToolOutput):
            out = self._close_block()
            out.append(_dumps(_output_chunk(event)))
            return out
        if isinstance(event, StepFinish):
            out = self._close_block()
            out.append(b'{"type":"finish-step"}')
            return out
        if isinstance(event, StepStart):
            return [b'{"type":"start-step"}']
        return []

    def _delta(self, kind: str, text: str) -> list[bytes]:
        if not text:
            return []
        if self._block_type == kind:  # the hot path: one small dumps
            return [_dumps({"type": _DELTA_TYPES[kind], "id": self._block_id, "delta": text})]
        out = self._close_block()
        self._blocks += 1
        self._block_type = kind
        self._block_id = f"{kind[0]}{self._blocks}"
        out.append(_dumps({"type": f"{kind}-start", "id": self._block_id}))
        out.append(_dumps({"type": f"{kind}-delta", "id": self._block_id, "delta": text}))
        return out

    def _tool_complete(self, event: ToolCallComplete) -> list[bytes]:
        out = self._close_block()
        call = event.call
        if call.parse_error is not None:
            chunk: dict[str, Any] = {
                "type": "tool-input-error",
                "toolCallId": call.id,
                "toolName": call.name,
                "input": call.raw_arguments,
                "errorText": call.parse_error,
            }
        else:
            chunk = {
                "type": "tool-input-available",
                "toolCallId": call.id,
                "toolName": call.name,
                "input": call.arguments,
            }
        out.append(_dumps(chunk))
        return out

    def _close_block(self) -> list[bytes]:
        if self._block_type is None:
            return []
        chunk = _dumps({"type": f"{self._block_type}-end", "id": self._block_id})
        self._block_type = None
        return [chunk]

    def error(self, error_text: str) -> list[bytes]:
        out = self._close_block()
        out.append(_dumps({"type": "error", "errorText": error_text}))
        return out

    def end(
        self,
        metadata: dict[str, Any],
        finish_reason: FinishReason | None,
        *,
        aborted: bool = False,
    ) -> list[bytes]:
        """The closing chunks: the stored status and usage ride in `message-metadata`."""
        out = self._close_block()
        out.append(b'{"type":"finish-step"}')
        out.append(_dumps({"type": "message-metadata", "messageMetadata": metadata}))
        if aborted:
            out.append(b'{"type":"abort"}')
        finish: dict[str, Any] = {"type": "finish"}
        reason = stream_finish_reason(finish_reason)
        if reason is not None:
            finish["finishReason"] = reason
        out.append(_dumps(finish))
        out.append(DONE)
        return out
