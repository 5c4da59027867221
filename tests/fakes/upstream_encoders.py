"""The two wire formats the fake upstream speaks, as encoders driven by a `Plan`.

`OpenAIStream` / `AnthropicStream` turn the plan's output pieces into SSE bytes
(opening, one output piece, fault, closing); `openai_whole` / `anthropic_whole` build
the non-streaming bodies.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from tests.fakes.upstream_wire import Plan


class Fault(enum.Enum):
    DROP = "drop"  # close the TCP connection now (FIN)
    HANG = "hang"  # stop writing, keep the connection open
    END = "end"  # end the body here, well-formed for its framing (a proxy gave up)
    RESET = "reset"  # reset the TCP connection now (RST)


DROP, HANG, END, RESET = Fault.DROP, Fault.HANG, Fault.END, Fault.RESET
_FAULTS = {"drop": DROP, "hang": HANG, "end": END, "reset": RESET}
Piece = bytes | Fault


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: %b\n" % event.encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


class OpenAIStream:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.created = int(time.time())
        self.calls_started = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": self.plan.response_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.plan.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def opening(self) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def output(self, kind: str, value: str, index: int = 0) -> list[bytes]:
        if kind == "reasoning":
            return [self._chunk({"reasoning_content": value})]
        if kind == "text":
            return [self._chunk({"content": value})]
        out = []
        if index == self.calls_started:  # a call's first piece: its id and name first
            self.calls_started += 1
            call = self.plan.calls[index]
            start = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out.append(self._chunk({"tool_calls": [start]}))
        out.append(
            self._chunk({"tool_calls": [{"index": index, "function": {"arguments": value}}]})
        )
        return out

    def fault(self, kind: str) -> Piece:
        if kind in _FAULTS:
            return _FAULTS[kind]
        # OpenRouter's way: HTTP 200 already sent, so the error rides in a chunk.
        return _sse(
            {
                "id": self.plan.response_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.plan.model,
                "error": {"code": 502, "message": "fake upstream error mid-stream"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )

    def closing(self, sent: int) -> list[bytes]:
        out = [self._chunk({}, self.plan.finish_reason)]
        if self.plan.include_usage:
            out.append(
                _sse(
                    {
                        "id": self.plan.response_id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.plan.model,
                        "choices": [],
                        "usage": _openai_usage(self.plan, sent),
                    }
                )
            )
        if self.plan.script.done:
            out.append(b"data: [DONE]\n\n")
        return out


def _openai_usage(plan: Plan, sent: int) -> dict[str, Any]:
    prompt, completion = plan.prompt_tokens, sent
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": min(sent, len(plan.reasoning))},
    }


def openai_whole(plan: Plan) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.text) or None}
    if plan.reasoning:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in plan.calls
        ]
    sent = plan.chunks
    return {
        "id": plan.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": plan.model,
        "usage": _openai_usage(plan, sent),
        "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
    }


class AnthropicStream:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.block: tuple[str, int] | None = None  # the open block's kind and call
        self.index = -1

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self.plan.response_id,
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.plan.prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        return [
            _sse({"type": "message_start", "message": message}, "message_start"),
            _sse({"type": "ping"}, "ping"),
        ]

    def _close_block(self) -> list[bytes]:
        if self.block is None:
            return []
        out = []
        if self.block[0] == "reasoning":
            out.append(self._delta({"type": "signature_delta", "signature": self.plan.signature}))
        out.append(_sse({"type": "content_block_stop", "index": self.index}, "content_block_stop"))
        self.block = None
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse(
            {"type": "content_block_delta", "index": self.index, "delta": delta},
            "content_block_delta",
        )

    def _open_block(self, kind: str, value: str, call: int) -> list[bytes]:
        out = self._close_block()
        self.index += 1
        self.block = (kind, call)
        block: dict[str, Any]
        if kind == "reasoning":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        elif kind == "redacted":
            block = {"type": "redacted_thinking", "data": value}
        elif kind == "text":
            block = {"type": "text", "text": ""}
        else:
            planned = self.plan.calls[call]
            block = {"type": "tool_use", "id": planned.id, "name": planned.name, "input": {}}
        out.append(
            _sse(
                {"type": "content_block_start", "index": self.index, "content_block": block},
                "content_block_start",
            )
        )
        return out

    def output(self, kind: str, value: str, call: int = 0) -> list[bytes]:
        out = self._open_block(kind, value, call) if (kind, call) != self.block else []
        if kind == "redacted":  # whole in its start
            return out
        delta = {
            "reasoning": {"type": "thinking_delta", "thinking": value},
            "text": {"type": "text_delta", "text": value},
            "tool": {"type": "input_json_delta", "partial_json": value},
        }[kind]
        out.append(self._delta(delta))
        return out

    def fault(self, kind: str) -> Piece:
        if kind in _FAULTS:
            return _FAULTS[kind]
        return _sse(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "error",
        )

    def closing(self, sent: int) -> list[bytes]:
        out = self._close_block()
        stop = self.plan.stop_reason
        out.append(
            _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": sent},
                },
                "message_delta",
            )
        )
        out.append(_sse({"type": "message_stop"}, "message_stop"))
        return out


def anthropic_whole(plan: Plan) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if plan.reasoning:
        content.append({"type": "thinking", "thinking": plan.thinking, "signature": plan.signature})
    if plan.redaction is not None:
        content.append({"type": "redacted_thinking", "data": plan.redaction})
    if plan.text:
        content.append({"type": "text", "text": "".join(plan.text)})
    for call in plan.calls:
        try:
            given = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:  # a script's deliberately broken arguments
            given = {}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": given})
    return {
        "id": plan.response_id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": plan.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.chunks},
    }
