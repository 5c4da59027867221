"""Typed llm events -> the Responses API's event stream, and the `response` object.

One `ResponseEncoder` per response. Every event carries `sequence_number`, counted from
0 in the order the events are written; each event is one frame of the generation's log,
so event `n` is the log's frame `n + 1` and `starting_after=N` resumes the log after
frame `N + 1`, on any worker, with nothing lost or repeated. The events, in order:

    response.created, response.in_progress      {"response": {... "status": ...}}
    per output item (a message, a reasoning item, a function call):
      response.output_item.added                 {"output_index", "item"}
      message / reasoning: response.content_part.added, then
        response.output_text.delta | response.reasoning_text.delta   (one per token)
        response.output_text.done | response.reasoning_text.done, response.content_part.done
      function call: response.function_call_arguments.delta, ...arguments.done
      response.output_item.done
    the end: response.completed | response.incomplete | response.failed

A stopped (cancelled) response ends with `response.incomplete` whose response says
`"status": "cancelled"` (the stream protocol has no event of its own for it). Item ids
are made from the response id and the output index, so a stored response read back
(`stored_response`) names its items as its stream did.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamkeep.gateway.arguments import HeldArguments
from streamkeep.gateway.chunks import openai_arguments
from streamkeep.generation.steps import ReplyEvent
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import (
    Completion,
    FinishReason,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolCallPart,
    Usage,
)
from streamkeep.sse import named

_dumps = orjson.dumps
_SHUTDOWN = "the server shut down before the answer was complete"


@dataclass(slots=True)
class ResponseHead:
    """What every `response` object of one response repeats."""

    id: str
    model: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    #: the request's fields the object echoes (`ResponsesBody.echo`)
    echo: dict[str, Any] = field(default_factory=dict)

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self.id.removeprefix('resp_')}_{index}"

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
        completed_at: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": completed_at,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model,
            "output": output,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": usage,
        }
        defaults: dict[str, Any] = {
            "instructions": None,
            "tools": [],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "temperature": None,
            "top_p": None,
            "max_output_tokens": None,
            "metadata": {},
            "previous_response_id": None,
            "background": False,
            "store": True,
            "user": None,
        }
        return {**body, **defaults, **self.echo}


def responses_usage(usage: Usage | dict[str, Any] | None) -> dict[str, Any] | None:
    """Our usage (a `Usage`, or its stored dict) in the Responses API's shape."""
    if usage is None:
        return None
    if isinstance(usage, Usage):
        usage = usage.as_dict()
    inputs, outputs = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {
        "input_tokens": inputs,
        "input_tokens_details": {
            "cached_tokens": int(usage.get("cached_input_tokens", 0)),
            "cache_write_tokens": 0,  # no provider streamkeep reads reports it apart
        },
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": int(usage.get("reasoning_tokens", 0))},
        "total_tokens": inputs + outputs,
    }


def final_state(status: str, finish_reason: str | None) -> tuple[str, str | None]:
    """A stored reply's status and finish reason -> the response's status and, for an
    incomplete one, why."""
    if status == "streaming":
        return "in_progress", None
    if status == "stopped":
        return "cancelled", None
    if status in ("error", "interrupted"):
        return "failed", None
    if finish_reason == "length":
        return "incomplete", "max_output_tokens"
    if finish_reason == "content-filter":
        return "incomplete", "content_filter"
    return "completed", None


def _error(message: str, failure: LLMError | None = None) -> dict[str, Any]:
    status = getattr(failure, "status", None)
    code = "rate_limit_exceeded" if status == 429 else "server_error"
    return {"code": code, "message": failure.message if failure is not None else message}


class ResponseEncoder:
    """Stateful encoder of one streamed response, as named-event payloads.

    It speaks the generation engine's encoder interface (`start`, `encode`, `error`,
    `end`) like `ChunkEncoder`; a pure relay (nothing stored) uses `encode` alone,
    which then also turns `Finish` / `StreamError` into the closing events.
    """

    __slots__ = (
        "_calls",
        "_error",
        "_head",
        "_open",
        "_output",
        "_seq",
        "_started",
        "_usage",
        "failure",
        "final",
        "raw_reason",
    )

    def __init__(self, head: ResponseHead) -> None:
        self._head = head
        self._seq = 0  # the next event's sequence_number
        self._started = False
        self._output: list[dict[str, Any]] = []  # every output item, as it stands
        self._open: _Open | None = None  # the open message or reasoning item
        self._calls: dict[str, _Call] = {}  # call id -> its open function_call item
        self._usage: Usage | None = None
        self._error: str | None = None
        #: the provider's failure, when the caller saw it (it picks the HTTP status)
        self.failure: LLMError | None = None
        #: the provider's own stop word, noted by the gateway's tap (unused here)
        self.raw_reason: str | None = None
        #: the final `response` object, once the last event is written
        self.final: dict[str, Any] | None = None

    @property
    def started(self) -> bool:
        """Whether the answer began (an output item went out). A failure before that
        can still be answered with an HTTP error status instead of a stream."""
        return bool(self._output)

    # -- the generation engine's interface -------------------------------------------

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]:
        # Nothing before the provider's first event: a refusal can still be an HTTP error.
        return []

    def encode(self, event: ReplyEvent) -> list[bytes]:
        """The payloads for one provider event (possibly none)."""
        if type(event) is TextDelta:
            return self._delta("message", event.text)
        if isinstance(event, ReasoningDelta):
            return self._delta("reasoning", event.text)
        if isinstance(event, ToolCallStart):
            return self._call_start(event.call_id, event.name)
        if isinstance(event, ToolCallDelta):
            return self._call_args(event.call_id, event.arguments_delta)
        if isinstance(event, ToolCallComplete):
            return self._call_complete(event.call)
        if isinstance(event, UsageReport):
            self._usage = event.usage
            return []
        if isinstance(event, Finish):
            return self._end(*final_state("complete", event.reason))
        if isinstance(event, StreamError):
            self.failure = event.error
            return self._end("failed", None, error=_error(event.error.message, event.error))
        return []

    def error(self, error_text: str) -> list[bytes]:
        """Note the failure; its event goes out from `end`, once the reply is stored."""
        self._error = error_text
        return []

    def end(
        self,
        metadata: dict[str, Any],
        finish_reason: FinishReason | None,
        *,
        aborted: bool = False,
    ) -> list[bytes]:
        usage = metadata.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(
                input_tokens=int(usage.get("input_tokens", 0)),
                output_tokens=int(usage.get("output_tokens", 0)),
                reasoning_tokens=int(usage.get("reasoning_tokens", 0)),
                cached_input_tokens=int(usage.get("cached_input_tokens", 0)),
            )
        status = str(metadata.get("status", "complete"))
        if self._error is not None or finish_reason == "error" or status == "error":
            return self._end("failed", None, error=_error(self._error or "the model failed"))
        if status == "interrupted":
            return self._end("failed", None, error=_error(_SHUTDOWN))
        return self._end(*final_state(status, finish_reason))

    # -- pieces ---------------------------------------------------------------------

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self._seq
        self._seq += 1
        return named(kind.encode(), _dumps(data))

    def _begin(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        queued = "queued" if self._head.echo.get("background") else "in_progress"
        return [
            self._event("response.created", {"response": self._head.response(queued, [])}),
            self._event(
                "response.in_progress", {"response": self._head.response("in_progress", [])}
            ),
        ]

    def _delta(self, kind: str, text: str) -> list[bytes]:
        if not text:
            return []
        out = self._begin()
        if self._open is None or self._open.kind != kind:
            out += self._close()
            out += self._open_item(kind)
        assert self._open is not None
        self._open.text.append(text)
        index = self._open.index
        item_id = self._output[index]["id"]
        name = (
            "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        )
        data: dict[str, Any] = {
            "item_id": item_id,
            "output_index": index,
            "content_index": 0,
            "delta": text,
        }
        if kind == "message":
            data["logprobs"] = []
        out.append(self._event(name, data))
        return out

    def _open_item(self, kind: str) -> list[bytes]:
        index = len(self._output)
        if kind == "message":
            item: dict[str, Any] = {
                "id": self._head.item_id("msg", index),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        else:
            item = {"id": self._head.item_id("rs", index), "type": "reasoning", "summary": []}
        self._output.append(item)
        self._open = _Open(kind, index)
        part = _part(kind, "")
        return [
            self._event("response.output_item.added", {"output_index": index, "item": item}),
            self._event(
                "response.content_part.added",
                {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
            ),
        ]

    def _close(self) -> list[bytes]:
        opened = self._open
        if opened is None:
            return []
        self._open = None
        text = "".join(opened.text)
        index, part = opened.index, _part(opened.kind, text)
        item = self._output[index]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if opened.kind == "message":
            done = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            item.update(status="completed", content=[part])
        else:
            done = self._event("response.reasoning_text.done", {**where, "text": text})
            item.update(content=[part])
        return [
            done,
            self._event("response.content_part.done", {**where, "part": part}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _call_start(self, call_id: str, name: str) -> list[bytes]:
        out = self._begin() + self._close()
        index = len(self._output)
        item = {
            "id": self._head.item_id("fc", index),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        self._output.append(item)
        self._calls[call_id] = _Call(index)
        out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
        return out

    def _call_args(self, call_id: str, piece: str) -> list[bytes]:
        call = self._calls.get(call_id)
        if call is None:
            return []
        text = call.args.feed(piece)
        return [] if text is None else [self._args_delta(call.index, text)]

    def _args_delta(self, index: int, text: str) -> bytes:
        item = self._output[index]
        data = {"item_id": item["id"], "output_index": index, "delta": text}
        return self._event("response.function_call_arguments.delta", data)

    def _call_complete(self, call: ToolCall) -> list[bytes]:
        out: list[bytes] = []
        if call.id not in self._calls:  # a provider that gives calls whole
            out += self._call_start(call.id, call.name)
        return out + self._call_done(self._calls.pop(call.id), openai_arguments(call))

    def _call_done(self, call: _Call, arguments: str, status: str = "completed") -> list[bytes]:
        out = [] if call.args.live or not arguments else [self._args_delta(call.index, arguments)]
        item = self._output[call.index]
        item.update(status=status, arguments=arguments)
        where = {"item_id": item["id"], "output_index": call.index}
        out.append(
            self._event("response.function_call_arguments.done", {**where, "arguments": arguments})
        )
        out.append(
            self._event("response.output_item.done", {"output_index": call.index, "item": item})
        )
        return out

    def _end(
        self, status: str, incomplete: str | None, *, error: dict[str, Any] | None = None
    ) -> list[bytes]:
        out = self._begin() + self._close()
        for call in self._calls.values():  # cut in the call: `incomplete`, as it came
            raw = call.args.sent if call.args.live else "".join(call.args.held)
            out += self._call_done(call, raw, "incomplete")
        self._calls.clear()
        response = self._head.response(
            status,
            self._output,
            usage=responses_usage(self._usage),
            error=error,
            incomplete=incomplete,
            completed_at=int(time.time()) if status == "completed" else None,
        )
        kind = {"completed": "response.completed", "failed": "response.failed"}.get(
            status, "response.incomplete"
        )
        out.append(self._event(kind, {"response": response}))
        self.final = response
        return out


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "message":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "reasoning_text", "text": text}


@dataclass(slots=True)
class _Open:
    kind: str  # "message" | "reasoning"
    index: int
    text: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    index: int
    args: HeldArguments = field(default_factory=HeldArguments)


def response_body(head: ResponseHead, completion: Completion) -> dict[str, Any]:
    """The whole `response` for an accumulated completion (a non-streaming call)."""
    output: list[dict[str, Any]] = []
    for part in completion.parts:
        index = len(output)
        if isinstance(part, TextPart) and part.text:
            output.append(_message_item(head, index, part.text))
        elif isinstance(part, ReasoningPart) and part.text:
            output.append(_reasoning_item(head, index, part.text))
        elif isinstance(part, ToolCallPart):
            call = part.call
            output.append(_call_item(head, index, call.id, call.name, openai_arguments(call)))
    status, incomplete = final_state("complete", completion.finish_reason)
    return head.response(
        status,
        output,
        usage=responses_usage(completion.usage),
        incomplete=incomplete,
        completed_at=int(time.time()) if status == "completed" else None,
    )


def stored_response(
    head: ResponseHead,
    parts: list[dict[str, Any]],
    *,
    status: str,
    finish_reason: str | None,
    usage: dict[str, Any] | None,
    error: str | None,
    completed_at: int | None,
) -> dict[str, Any]:
    """A stored reply (its message parts and status) as a `response` object."""
    output: list[dict[str, Any]] = []
    for part in parts:
        index, kind = len(output), str(part.get("type", ""))
        if kind == "text" and part.get("text"):
            output.append(_message_item(head, index, str(part["text"])))
        elif kind == "reasoning" and part.get("text"):
            output.append(_reasoning_item(head, index, str(part["text"])))
        elif kind.startswith("tool-"):
            raw = part.get("rawInput")
            arguments = raw if isinstance(raw, str) else _dumps(part.get("input") or {}).decode()
            call_id = str(part.get("toolCallId", ""))
            item = _call_item(head, index, call_id, kind.removeprefix("tool-"), arguments)
            if part.get("state") == "input-streaming":  # cut before it was whole
                item["status"] = "incomplete"
            output.append(item)
    state, incomplete = final_state(status, finish_reason)
    failed = None
    if state == "failed":
        failed = _error(_SHUTDOWN if status == "interrupted" else error or "the model failed")
    return head.response(
        state,
        output,
        usage=responses_usage(usage) if state != "in_progress" else None,
        error=failed,
        incomplete=incomplete,
        completed_at=completed_at if state == "completed" else None,
    )


def _message_item(head: ResponseHead, index: int, text: str) -> dict[str, Any]:
    return {
        "id": head.item_id("msg", index),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [_part("message", text)],
    }


def _reasoning_item(head: ResponseHead, index: int, text: str) -> dict[str, Any]:
    return {
        "id": head.item_id("rs", index),
        "type": "reasoning",
        "summary": [],
        "content": [_part("reasoning", text)],
    }


def _call_item(
    head: ResponseHead, index: int, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    return {
        "id": head.item_id("fc", index),
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
