"""A validated request body -> what the provider is asked, and what the store keeps.

The provider gets the client's messages exactly (the client's view of the conversation
is the truth for a gateway call); the store gets one message per request message, in
the same AI SDK part shapes the chat API stores:

    system / developer  -> the chat's system prompt if it comes first, else a system message
    user                -> its images' file parts (`store.images`), then {"type": "text"}
    assistant           -> reasoning, text, then one `tool-<name>` part per call
                           (state "input-available": its answer is a later tool message)
    tool                -> a tool message whose `tool-<name>` part has state
                           "output-available" and the answer as `output`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streamkeep.gateway.schemas import ChatCompletionBody, ChatMessageIn
from streamkeep.llm.types import ChatRequest, ImagePart, Message, Role, ToolCall, ToolSpec
from streamkeep.store.images import Image

TOOL_PREFIX = "tool-"


@dataclass(slots=True)
class StoredIn:
    """One request message as the store keeps it."""

    role: Role
    parts: list[dict[str, Any]] = field(default_factory=list)


class MessageImages:
    """The checked images of a request's user messages (see `gateway.images`), by
    message: the request's messages are the keys, so slices of them find theirs."""

    def __init__(self) -> None:
        self._by: dict[int, tuple[ChatMessageIn, list[Image]]] = {}

    def add(self, message: ChatMessageIn, images: list[Image]) -> None:
        self._by[id(message)] = (message, images)

    def of(self, message: ChatMessageIn) -> list[Image]:
        found = self._by.get(id(message))
        return found[1] if found is not None and found[0] is message else []

    def all(self) -> list[Image]:
        return [image for _, images in self._by.values() for image in images]


NO_IMAGES = MessageImages()


def to_chat_request(
    body: ChatCompletionBody, model_name: str, images: MessageImages = NO_IMAGES
) -> ChatRequest:
    """The provider request; `model_name` is the provider's own name (no prefix).

    Fields only OpenAI-style APIs know (`parallel_tool_calls`, `reasoning_effort`, and
    every field not modelled: `body.passthrough`) go in `openai_extra`: an
    OpenAI-compatible provider is sent them, others (which would refuse them) not."""
    openai_extra = body.passthrough
    if body.parallel_tool_calls is not None:
        openai_extra["parallel_tool_calls"] = body.parallel_tool_calls
    if body.reasoning_effort is not None:
        openai_extra["reasoning_effort"] = body.reasoning_effort
    return ChatRequest(
        model=model_name,
        messages=to_messages(body.messages, images),
        tools=[
            ToolSpec(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in body.tools or []
        ],
        tool_choice=body.tool_choice,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop,
        seed=body.seed,
        response_format=body.response_format,
        user=body.user,
        openai_extra=openai_extra,
    )


def to_messages(messages: list[ChatMessageIn], images: MessageImages = NO_IMAGES) -> list[Message]:
    names = _tool_names(messages)
    out: list[Message] = []
    for msg in messages:
        if msg.role in ("system", "developer"):
            out.append(Message(role="system", content=msg.content or ""))
        elif msg.role == "assistant":
            out.append(
                Message(
                    role="assistant",
                    content=msg.content or "",
                    reasoning=msg.reasoning_content or "",
                    tool_calls=[
                        _tool_call(c.id, c.function.name, c.function.arguments)
                        for c in msg.tool_calls or []
                    ],
                )
            )
        elif msg.role == "tool":
            call_id = msg.tool_call_id
            out.append(
                Message(
                    role="tool",
                    content=msg.content or "",
                    tool_call_id=call_id,
                    name=msg.name or names.get(call_id or "", (None, None))[0],
                )
            )
        else:
            parts = [ImagePart(i.media_type, i.data, ref=i.sha256) for i in images.of(msg)]
            out.append(Message(role="user", content=msg.content or "", images=parts))
    return out


def _tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    try:
        parsed = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        return ToolCall(
            id=call_id, name=name, arguments={}, raw_arguments=raw, parse_error=str(exc)
        )
    if not isinstance(parsed, dict):
        return ToolCall(
            id=call_id,
            name=name,
            arguments={},
            raw_arguments=raw,
            parse_error="arguments are not a JSON object",
        )
    return ToolCall(id=call_id, name=name, arguments=parsed, raw_arguments=raw)


def _tool_names(messages: list[ChatMessageIn]) -> dict[str, tuple[str, dict[str, Any]]]:
    """call id -> (tool name, parsed arguments), from the assistant messages' calls."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for msg in messages:
        for c in msg.tool_calls or []:
            found[c.id] = (c.function.name, _tool_call(c.id, "", c.function.arguments).arguments)
    return found


def split_system(messages: list[ChatMessageIn]) -> tuple[str | None, list[ChatMessageIn]]:
    """A leading system/developer message becomes the chat's system prompt."""
    if messages and messages[0].role in ("system", "developer"):
        return messages[0].content or "", messages[1:]
    return None, messages


def to_stored(
    messages: list[ChatMessageIn],
    context: list[ChatMessageIn],
    images: MessageImages = NO_IMAGES,
) -> list[StoredIn]:
    """Store shapes of `messages`; `context` (the whole request) names the tool calls."""
    names = _tool_names(context)
    out: list[StoredIn] = []
    for msg in messages:
        text = msg.content or ""
        if msg.role in ("system", "developer", "user"):
            role: Role = "user" if msg.role == "user" else "system"
            files = [i.part() for i in images.of(msg)]
            out.append(StoredIn(role, [*files, {"type": "text", "text": text}]))
        elif msg.role == "assistant":
            out.append(StoredIn("assistant", _assistant_parts(msg)))
        else:
            call_id = msg.tool_call_id or ""
            name, args = names.get(call_id, (msg.name or "unknown", {}))
            part = {
                "type": TOOL_PREFIX + name,
                "toolCallId": call_id,
                "state": "output-available",
                "input": args,
                "output": text,
            }
            out.append(StoredIn("tool", [part]))
    return out


def _assistant_parts(msg: ChatMessageIn) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if msg.reasoning_content:
        parts.append({"type": "reasoning", "text": msg.reasoning_content})
    if msg.content:
        parts.append({"type": "text", "text": msg.content})
    for c in msg.tool_calls or []:
        call = _tool_call(c.id, c.function.name, c.function.arguments)
        parts.append(
            {
                "type": TOOL_PREFIX + call.name,
                "toolCallId": call.id,
                "state": "input-available",
                "input": call.arguments,
            }
        )
    return parts


def signature(role: str, text: str, call_ids: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    """What makes two messages "the same" when matching a request against a stored chat."""
    return (role, text, call_ids)


def request_signatures(messages: list[ChatMessageIn]) -> list[tuple[str, str, tuple[str, ...]]]:
    out = []
    for msg in messages:
        role = "system" if msg.role == "developer" else msg.role
        if msg.role == "tool":
            ids: tuple[str, ...] = (msg.tool_call_id or "",)
            text = ""  # stored tool text lives in `output`; the call id identifies it
        else:
            ids = tuple(c.id for c in msg.tool_calls or [])
            text = msg.content or ""
        out.append(signature(role, text, ids))
    return out


def stored_signature(role: str, parts: list[dict[str, Any]]) -> tuple[str, str, tuple[str, ...]]:
    text = "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
    ids = tuple(
        str(p.get("toolCallId", ""))
        for p in parts
        if str(p.get("type", "")).startswith(TOOL_PREFIX)
    )
    return signature(role, "" if role == "tool" else text, ids)


def new_messages(
    request: list[ChatMessageIn], stored: list[tuple[str, str, tuple[str, ...]]]
) -> list[ChatMessageIn]:
    """The request messages a continued chat does not have yet.

    When the chat's active branch is a prefix of the request (the usual case: the
    client resends the whole conversation), everything after it; otherwise (the client
    rewrote its history) the trailing turn: the messages after its last assistant one.
    """
    sigs = request_signatures(request)
    if len(sigs) > len(stored) and sigs[: len(stored)] == stored:
        return request[len(stored) :]
    last_assistant = max((i for i, m in enumerate(request) if m.role == "assistant"), default=-1)
    return request[last_assistant + 1 :]
