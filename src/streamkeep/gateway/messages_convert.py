"""A `POST /v1/messages` body -> what the provider is asked, and what the store keeps.

The provider gets the conversation as the client sent it, thinking blocks (with their
signatures, and redacted ones) included: an Anthropic provider takes them back
verbatim. A user turn's `tool_result` blocks become tool messages, before its text.

The store keeps the call like a Chat Completions one: `as_completion_body` restates the
messages in OpenAI's shape so `gateway.keep` places them (new chat, or the continued
one's missing messages) by the same rules. What that shape cannot say, thinking
signatures, redacted blocks and a tool_result's `is_error`, `restore` puts back into
the stored parts (as the chat API stores them), so the chat can go on from the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streamkeep.gateway.convert import MessageImages, StoredIn
from streamkeep.gateway.messages_schema import (
    MessageIn,
    MessagesBody,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    openai_tool_choice,
)
from streamkeep.gateway.schemas import (
    ChatCompletionBody,
    ChatMessageIn,
    FunctionCallIn,
    ToolCallIn,
)
from streamkeep.llm.types import (
    ChatRequest,
    ImagePart,
    Message,
    ReasoningPart,
    ToolCall,
    ToolSpec,
)
from streamkeep.store.images import Image


def to_chat_request(
    body: MessagesBody, model_name: str, images: list[list[Image]] | None = None
) -> ChatRequest:
    """The provider request; `model_name` is the provider's own name (no prefix);
    `images`: each message's checked images (`gateway.images.messages_images`)."""
    messages = [] if body.system_text is None else [Message("system", body.system_text)]
    names = {b.id: b.name for m in body.messages for b in m.content if isinstance(b, ToolUseBlock)}
    for i, msg in enumerate(body.messages):
        if msg.role == "assistant":
            messages += _assistant(msg)
        else:
            messages += _user(msg, names, images[i] if images else [])
    return ChatRequest(
        model=model_name,
        messages=messages,
        tools=[
            ToolSpec(name=t.name, description=t.description, parameters=t.input_schema)
            for t in body.tools or []
        ],
        tool_choice=openai_tool_choice(body.tool_choice),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        user=body.metadata.user_id if body.metadata is not None else None,
    )


def _text(msg: MessageIn) -> str:
    return "".join(b.text for b in msg.content if isinstance(b, TextBlock))


def _user(msg: MessageIn, names: dict[str, str], images: list[Image]) -> list[Message]:
    out = [
        Message(
            "tool",
            b.content,
            tool_call_id=b.tool_use_id,
            name=names.get(b.tool_use_id),
            is_error=b.is_error,
        )
        for b in msg.content
        if isinstance(b, ToolResultBlock)
    ]
    if not out or images or any(isinstance(b, TextBlock) for b in msg.content):
        parts = [ImagePart(i.media_type, i.data, ref=i.sha256) for i in images]
        out.append(Message("user", _text(msg), images=parts))
    return out


def _assistant(msg: MessageIn) -> list[Message]:
    thinking: list[ReasoningPart] = []
    for b in msg.content:
        if isinstance(b, ThinkingBlock):
            thinking.append(ReasoningPart(b.thinking, signature=b.signature))
        elif isinstance(b, RedactedThinkingBlock):
            thinking.append(ReasoningPart("", redacted=b.data))
    calls = [
        ToolCall(b.id, b.name, b.input, raw_arguments=orjson.dumps(b.input).decode())
        for b in msg.content
        if isinstance(b, ToolUseBlock)
    ]
    reasoning = "".join(p.text for p in thinking)
    return [Message("assistant", _text(msg), reasoning, calls, thinking=thinking)]


@dataclass(slots=True)
class _Extra:
    """What one restated message lost: its thinking blocks, or its result's error flag."""

    thinking: list[ReasoningPart] = field(default_factory=list)
    is_error: bool = False


@dataclass(slots=True)
class Kept:
    """The call in Chat Completions' shape, and what each of its messages lost."""

    body: ChatCompletionBody
    extras: list[_Extra]
    # The user messages' images, for `keep.place` to store with them.
    images: MessageImages = field(default_factory=MessageImages)


def as_completion_body(body: MessagesBody, images: list[list[Image]] | None = None) -> Kept:
    """The same call in Chat Completions' shape, for `gateway.keep` to place and store."""
    messages = [] if body.system_text is None else [_in("system", body.system_text)]
    extras = [_Extra() for _ in messages]
    by_message = MessageImages()
    for i, msg in enumerate(body.messages):
        if msg.role == "user":
            results = [b for b in msg.content if isinstance(b, ToolResultBlock)]
            for b in results:
                messages.append(_in("tool", b.content, tool_call_id=b.tool_use_id))
                extras.append(_Extra(is_error=b.is_error))
            mine = images[i] if images else []
            if not results or mine or any(isinstance(b, TextBlock) for b in msg.content):
                messages.append(_in("user", _text(msg)))  # as `to_chat_request` sends it
                extras.append(_Extra())
                if mine:
                    by_message.add(messages[-1], mine)
            continue
        calls = [
            ToolCallIn(
                id=b.id,
                function=FunctionCallIn(name=b.name, arguments=orjson.dumps(b.input).decode()),
            )
            for b in msg.content
            if isinstance(b, ToolUseBlock)
        ]
        (sent,) = _assistant(msg)
        messages.append(
            ChatMessageIn(
                role="assistant",
                content=sent.content,
                tool_calls=calls or None,
                reasoning_content=sent.reasoning or None,
            )
        )
        extras.append(_Extra(thinking=sent.thinking))
    kept = ChatCompletionBody(model=body.model, messages=messages, stream=body.stream)
    return Kept(kept, extras, by_message)


def restore(prior: list[StoredIn], kept: Kept) -> list[StoredIn]:
    """`prior` (what `keep.place` stores: always the last messages of `kept`) with the
    thinking blocks and error flags the Chat Completions shape lost."""
    extras = kept.extras[len(kept.extras) - len(prior) :]
    out: list[StoredIn] = []
    for stored, extra in zip(prior, extras, strict=True):
        parts = stored.parts
        if stored.role == "assistant" and extra.thinking:
            rest = [p for p in parts if p.get("type") != "reasoning"]
            parts = [_reasoning(p) for p in extra.thinking if p.text or p.redacted] + rest
        elif stored.role == "tool" and extra.is_error and parts:
            failed = {k: v for k, v in parts[0].items() if k != "output"}
            parts = [{**failed, "state": "output-error", "errorText": parts[0].get("output", "")}]
        out.append(StoredIn(stored.role, parts))
    return out


def _reasoning(part: ReasoningPart) -> dict[str, Any]:
    """A thinking block as the chat API stores one (`generation.parts`)."""
    out: dict[str, Any] = {"type": "reasoning", "text": part.text}
    if part.redacted is not None:
        out["providerMetadata"] = {"anthropic": {"redactedData": part.redacted}}
    elif part.signature is not None:
        out["providerMetadata"] = {"anthropic": {"signature": part.signature}}
    return out


def _in(role: str, content: str, tool_call_id: str | None = None) -> ChatMessageIn:
    return ChatMessageIn.model_validate(
        {"role": role, "content": content, "tool_call_id": tool_call_id}
    )
