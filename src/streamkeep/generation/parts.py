"""Stored message parts (AI SDK UIMessage shapes) <-> the llm library's types.

`completion_to_parts` is what checkpoints and the final write store, typed by the
`UIPart` shapes below; `history_to_messages` turns a stored branch back into the
conversation sent to the model (a user message's image parts become `ImagePart`s
naming the stored image, read by `plan.load_images`). Parts read back from the
database are plain JSON objects (a damaged row may hold anything), so reading them
never trusts those types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Protocol, TypedDict, cast

import orjson

from streamkeep.llm.types import (
    Completion,
    ImagePart,
    Message,
    ReasoningPart,
    Role,
    TextPart,
    ToolCall,
    ToolCallPart,
)
from streamkeep.store.images import image_sha

TOOL_PREFIX = "tool-"
_ANSWERED = ("output-available", "output-error")


class TextUIPart(TypedDict):
    type: Literal["text"]
    text: str


class ReasoningUIPart(TypedDict):
    type: Literal["reasoning"]
    text: str
    # {"anthropic": {"signature": ...}} or {"anthropic": {"redactedData": ...}}: what
    # Anthropic needs to take the block back (the AI SDK keeps it there too).
    providerMetadata: NotRequired[dict[str, Any]]


class StepStartUIPart(TypedDict):
    """Where a step of a reply with tools begins (a model call)."""

    type: Literal["step-start"]


class ToolUIPart(TypedDict):
    """A tool call: `type` is `tool-<name>`; `state` says how far it got."""

    type: str
    toolCallId: str
    # input-streaming: its arguments never came whole (the reply was cut in the call)
    state: Literal["input-streaming", "input-available", "output-available", "output-error"]
    input: dict[str, Any]
    output: NotRequired[Any]
    # Arguments that were not valid JSON, as the model sent them.
    rawInput: NotRequired[str]
    errorText: NotRequired[str]


UIPart = TextUIPart | ReasoningUIPart | StepStartUIPart | ToolUIPart


class StoredMessage(Protocol):
    """What prompt building needs of a stored message (the store's MessageRecord)."""

    @property
    def role(self) -> Role: ...

    @property
    def parts(self) -> list[dict[str, Any]]: ...


def storable(text: str) -> str:
    """Model output as the databases can keep it: PostgreSQL refuses U+0000, which a
    model can emit; it becomes U+FFFD (the replacement character) in what is stored."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def storable_json(value: Any) -> Any:
    """A JSON value with `storable` strings (keys too): tool inputs and outputs."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    return value


def as_json(parts: list[UIPart]) -> list[dict[str, Any]]:
    """Parts as the store takes them: JSON objects (a TypedDict is one, by type only)."""
    return cast(list[dict[str, Any]], parts)


def completion_to_parts(
    completion: Completion, unfinished: frozenset[str] = frozenset()
) -> list[UIPart]:
    """The stored parts of an answer; a call in `unfinished` (cut before its arguments
    were complete) is kept `input-streaming`, with the text that came (`rawInput`)."""
    parts: list[UIPart] = []
    for part in completion.parts:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"type": "text", "text": storable(part.text)})
        elif isinstance(part, ReasoningPart):
            if part.text or part.redacted:
                parts.append(_reasoning_part(part))
        elif isinstance(part, ToolCallPart):
            call = part.call
            if call.id in unfinished:
                parts.append(_cut_tool_part(call))
            else:
                parts.append(_tool_part(call))
    return parts


def _reasoning_part(part: ReasoningPart) -> ReasoningUIPart:
    out: ReasoningUIPart = {"type": "reasoning", "text": storable(part.text)}
    if part.redacted is not None:
        out["providerMetadata"] = {"anthropic": {"redactedData": part.redacted}}
    elif part.signature is not None:
        out["providerMetadata"] = {"anthropic": {"signature": part.signature}}
    return out


def with_output(part: UIPart, output: ToolResult | None) -> UIPart:
    """A tool call's part with its result (`output` None: left as it is). A call whose
    input could not be parsed keeps its own error."""
    if output is None or part.get("state") != "input-available":
        return part
    done = cast(ToolUIPart, dict(part))
    if output.error is not None:
        done["state"] = "output-error"
        done["errorText"] = storable(output.error)
    else:
        done["state"] = "output-available"
        done["output"] = output.output
    return cast(UIPart, done)


class ToolResult(Protocol):
    """A tool's outcome (the tool loop's `ToolOutput`)."""

    @property
    def output(self) -> Any: ...

    @property
    def error(self) -> str | None: ...


def _cut_tool_part(call: ToolCall) -> ToolUIPart:
    return {
        "type": TOOL_PREFIX + call.name,
        "toolCallId": call.id,
        "state": "input-streaming",
        "input": {},
        "rawInput": storable(call.raw_arguments),
    }


def _tool_part(call: ToolCall) -> ToolUIPart:
    if call.parse_error is not None:
        return {
            "type": TOOL_PREFIX + call.name,
            "toolCallId": call.id,
            "state": "output-error",
            "input": storable_json(call.arguments),
            "rawInput": storable(call.raw_arguments),
            "errorText": call.parse_error,
        }
    return {
        "type": TOOL_PREFIX + call.name,
        "toolCallId": call.id,
        "state": "input-available",
        "input": storable_json(call.arguments),
    }


def text_of(parts: Iterable[dict[str, Any]]) -> str:
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def image_of(part: dict[str, Any]) -> ImagePart | None:
    """A stored image's file part as an image to read (see `plan.load_images`)."""
    sha = image_sha(part)
    if sha is None:
        return None
    return ImagePart(media_type=str(part.get("mediaType", "")), ref=sha)


def history_to_messages(system: str | None, history: Sequence[StoredMessage]) -> list[Message]:
    """The conversation for the model: system prompt, then each stored message.

    A tool call goes to the model only together with its result: a call without an
    answer (the user never ran it) would make OpenAI-style APIs reject the request.
    """
    messages: list[Message] = []
    if system:
        messages.append(Message(role="system", content=system))
    for record in _answers_folded(history):
        if record.role == "system":
            messages.append(Message(role="system", content=text_of(record.parts)))
        elif record.role == "user":
            images = [i for p in record.parts if (i := image_of(p)) is not None]
            messages.append(Message(role="user", content=text_of(record.parts), images=images))
        elif record.role == "assistant":
            messages.extend(assistant_messages(record.parts))
        elif record.role == "tool":
            messages.extend(_tool_results(record.parts))
    return messages


@dataclass(slots=True)
class _Record:
    role: Role
    parts: list[dict[str, Any]]


def _answers_folded(history: Sequence[StoredMessage]) -> list[_Record]:
    """The history with each `tool` message's results put on the calls they answer in
    the assistant message before it (the gateways store a client's tool results as
    messages of their own, after the reply that made the calls): a call goes to the
    model only with its result, so unfolded, the call would be left out and its
    result sent alone, which providers refuse."""
    out: list[_Record] = []
    assistant: _Record | None = None
    for record in history:
        if record.role == "assistant":
            assistant = _Record(record.role, list(record.parts))
            out.append(assistant)
            continue
        if record.role != "tool" or assistant is None:
            assistant = None
            out.append(_Record(record.role, record.parts))
            continue
        calls = {
            p.get("toolCallId"): i
            for i, p in enumerate(assistant.parts)
            if _is_tool(p) and p.get("state") == "input-available"
        }
        left = []
        for part in record.parts:
            index = calls.get(part.get("toolCallId"))
            if index is None or part.get("state") not in _ANSWERED:
                left.append(part)
                continue
            answer = {k: v for k, v in part.items() if k in ("state", "output", "errorText")}
            assistant.parts[index] = {**assistant.parts[index], **answer}
        if left:
            out.append(_Record(record.role, left))
    return out


def assistant_messages(parts: Sequence[dict[str, Any]]) -> list[Message]:
    """An assistant message's parts as the model is sent them: each step (the parts
    after a `step-start`; a message without one is one step) is an assistant message
    with its answered calls, then a tool message per result."""
    messages: list[Message] = []
    for step in _steps(parts):
        answered = [p for p in step if _is_tool(p) and p.get("state") in _ANSWERED]
        content = text_of(step)
        if not content and not answered:
            continue  # e.g. stopped before the first token: nothing to show the model
        calls = [
            ToolCall(id=str(p.get("toolCallId", "")), name=_tool_name(p), arguments=_input(p))
            for p in answered
        ]
        thinking = [t for p in step if (t := _thinking(p)) is not None]
        messages.append(
            Message(role="assistant", content=content, tool_calls=calls, thinking=thinking)
        )
        messages.extend(_tool_results(answered))
    return messages


def _steps(parts: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    steps: list[list[dict[str, Any]]] = [[]]
    for part in parts:
        if part.get("type") == "step-start":
            if steps[-1]:
                steps.append([])
        else:
            steps[-1].append(part)
    return steps


def _thinking(part: dict[str, Any]) -> ReasoningPart | None:
    """A reasoning part Anthropic can take back: one it signed, or redacted."""
    if part.get("type") != "reasoning":
        return None
    meta = part.get("providerMetadata")
    anthropic = meta.get("anthropic") if isinstance(meta, dict) else None
    if not isinstance(anthropic, dict):
        return None
    text = str(part.get("text", ""))
    if isinstance(redacted := anthropic.get("redactedData"), str):
        return ReasoningPart(text="", redacted=redacted)
    if isinstance(signature := anthropic.get("signature"), str):
        return ReasoningPart(text=text, signature=signature)
    return None


def _tool_results(parts: list[dict[str, Any]]) -> list[Message]:
    results: list[Message] = []
    for p in parts:
        if not _is_tool(p) or p.get("state") not in _ANSWERED:
            continue
        error = p["state"] == "output-error"
        if error:
            content = f"Error: {p.get('errorText', '')}"
        else:
            output = p.get("output")
            content = output if isinstance(output, str) else orjson.dumps(output).decode()
        results.append(
            Message(
                role="tool",
                content=content,
                tool_call_id=str(p.get("toolCallId", "")),
                name=_tool_name(p),
                is_error=error,
            )
        )
    return results


def _is_tool(part: dict[str, Any]) -> bool:
    return str(part.get("type", "")).startswith(TOOL_PREFIX)


def _tool_name(part: dict[str, Any]) -> str:
    return str(part["type"])[len(TOOL_PREFIX) :]


def _input(part: dict[str, Any]) -> dict[str, Any]:
    value = part.get("input")
    return value if isinstance(value, dict) else {}
