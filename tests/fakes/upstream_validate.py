"""The history checks the real APIs make, so the fake refuses what they would refuse.

Each function takes a request body and returns why the API would answer it 400, or
None when it would take it. The messages follow the vendors' own where we know them.

OpenAI's Chat Completions:
- `messages` is a non-empty list of objects with a known role;
- an assistant message with `tool_calls` is followed at once by `tool` messages
  answering every one of its call ids (and only those); a `tool` message answers a
  call of the assistant message before it;
- a tool call has an id, type "function", a name, and `arguments` as a string of JSON;
- an assistant's content may be null only with tool calls; reasoning is not taken
  back (`reasoning_content`: DeepSeek refuses it, so the strictest server is modelled);
- a user message's content parts are `text` or `image_url` ({"url": a data URI of an
  image in base64, or an http(s) URL}).

Anthropic's Messages:
- `messages` is a non-empty list; roles alternate user / assistant, starting with user
  (the API now merges turns of one role in a row; we hold our requests to the stricter
  rule, which every version accepts);
- no empty content, no empty text block; an image block's source is base64 (with a
  media_type of png, jpeg, gif or webp) or a url;
- every tool_use of an assistant turn is answered by a tool_result with its id in the
  very next user turn, the tool_result blocks first in it; a tool_result refers to a
  tool_use of the assistant turn just before; tool_use ids are unique and well-formed;
- with `thinking` enabled, the assistant turn whose tool calls the last turn answers
  starts with a thinking block;
- thinking and redacted_thinking blocks come first in an assistant turn; a thinking
  block carries a signature, and its (text, signature) pair must be one the fake
  issued (as the real signatures are checked against the text); redacted data too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Container, Mapping
from typing import Any

import orjson

__all__ = ["anthropic_history", "openai_history"]

_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_USER_BLOCKS = {"text", "image", "document", "search_result", "tool_result"}
_ASSISTANT_BLOCKS = {"text", "thinking", "redacted_thinking", "tool_use"}
_THINKING = {"thinking", "redacted_thinking"}
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")


class _Invalid(Exception):
    pass


# -- OpenAI ---------------------------------------------------------------------------


def openai_history(body: Any) -> str | None:
    """Why Chat Completions would refuse this body's `messages`, or None."""
    try:
        _openai(body)
    except _Invalid as exc:
        return str(exc)
    return None


def _openai(body: Any) -> None:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise _Invalid("'messages' must be a non-empty array")
    waiting: dict[str, bool] | None = None  # the last tool calls' ids -> answered
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Invalid(f"messages[{i}]: expected an object")
        role = message.get("role")
        if role not in _OPENAI_ROLES:
            raise _Invalid(f"messages[{i}].role: invalid value {role!r}")
        if role == "tool":
            _openai_tool(i, message, waiting)
            continue
        _all_answered(waiting)
        waiting = None
        if role == "assistant":
            waiting = _openai_assistant(i, message)
        elif not _is_content(message.get("content")):
            raise _Invalid(f"messages[{i}].content: expected a string or an array of parts")
        elif role == "user" and isinstance(message["content"], list):
            _openai_user_parts(i, message["content"])
    _all_answered(waiting)


def _openai_user_parts(i: int, parts: list[Any]) -> None:
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _Invalid(f"{where}.text: expected a string")
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise _Invalid(f"{where}.image_url.url: expected a string")
            if url.startswith("data:"):
                head, _, data = url.partition(",")
                if not re.fullmatch(r"data:image/(png|jpeg|gif|webp);base64", head):
                    raise _Invalid(f"{where}: invalid image data URI {head[:40]!r}")
                _base64(where, data)
            elif not url.startswith(("http://", "https://")):
                raise _Invalid(f"{where}.image_url.url: expected a URL or a data URI")
        else:
            raise _Invalid(f"{where}.type: invalid user content part {kind!r}")


def _base64(where: str, data: Any) -> None:
    try:
        base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        raise _Invalid(f"{where}: the image's base64 data is invalid") from None


def _openai_tool(i: int, message: dict[str, Any], waiting: dict[str, bool] | None) -> None:
    if waiting is None:
        raise _Invalid(
            f"Invalid parameter: messages with role 'tool' must be a response to a "
            f"preceding message with 'tool_calls' (messages[{i}])"
        )
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _Invalid(f"messages[{i}].tool_call_id: required")
    if call_id not in waiting:
        raise _Invalid(
            f"messages[{i}]: tool_call_id {call_id!r} answers no tool call of the "
            f"preceding assistant message"
        )
    if not _is_content(message.get("content")):
        raise _Invalid(f"messages[{i}].content: expected a string or an array of parts")
    waiting[call_id] = True


def _all_answered(waiting: dict[str, bool] | None) -> None:
    missing = [call_id for call_id, answered in (waiting or {}).items() if not answered]
    if missing:
        raise _Invalid(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(missing)}"
        )


def _openai_assistant(i: int, message: dict[str, Any]) -> dict[str, bool] | None:
    """The message's call ids (each not answered yet), or None when it made no calls."""
    for key in ("reasoning_content", "reasoning"):
        if key in message:
            raise _Invalid(f"messages[{i}]: {key} must not be sent back in the history")
    calls = message.get("tool_calls")
    content = message.get("content")
    if calls is None or calls == []:
        if not _is_content(content):
            raise _Invalid(
                f"messages[{i}].content: an assistant message without tool_calls needs content"
            )
        return None
    if content is not None and not _is_content(content):
        raise _Invalid(f"messages[{i}].content: expected a string, an array of parts or null")
    if not isinstance(calls, list):
        raise _Invalid(f"messages[{i}].tool_calls: expected an array")
    waiting: dict[str, bool] = {}
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(call, dict) or not _nonempty(call.get("id")):
            raise _Invalid(f"{where}.id: required")
        if call.get("type") != "function":
            raise _Invalid(f"{where}.type: expected 'function'")
        function = call.get("function")
        if not isinstance(function, dict) or not _nonempty(function.get("name")):
            raise _Invalid(f"{where}.function.name: required")
        if not _is_json_text(function.get("arguments")):
            raise _Invalid(f"{where}.function.arguments: expected a string of JSON")
        waiting[call["id"]] = False
    return waiting


def _is_content(content: Any) -> bool:
    return isinstance(content, str) or (isinstance(content, list) and bool(content))


def _is_json_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


# -- Anthropic ------------------------------------------------------------------------


def anthropic_history(
    body: Any, signatures: Mapping[str, str], redactions: Container[str]
) -> str | None:
    """Why the Messages API would refuse this body's `messages`, or None. `signatures`
    maps each thinking signature issued to the text it signs; `redactions` holds the
    redacted_thinking data issued."""
    try:
        _anthropic(body, signatures, redactions)
    except _Invalid as exc:
        return str(exc)
    return None


def _anthropic(body: Any, signatures: Mapping[str, str], redactions: Container[str]) -> None:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    tool_uses: list[str] = []  # the ids of the previous assistant turn's tool_use blocks
    seen: set[str] = set()  # every tool_use id so far
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        if i and role == messages[i - 1].get("role"):
            raise _Invalid(
                f'messages: roles must alternate between "user" and "assistant", but '
                f'found multiple "{role}" roles in a row'
            )
        final = role == "assistant" and i == len(messages) - 1  # a prefill may be empty
        blocks = _blocks(i, message.get("content"), may_be_empty=final)
        if role == "user":
            _answers(i, blocks, tool_uses)
            tool_uses = []
        else:
            tool_uses = _assistant(i, blocks, signatures, redactions, seen)
    if tool_uses:
        _missing(len(messages) - 1, tool_uses)
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        _thinking_leads(messages)


def _thinking_leads(messages: list[dict[str, Any]]) -> None:
    """With thinking on, the assistant turn whose tool calls the request answers (the
    one before the final turn of tool results) starts with its thinking."""
    if len(messages) < 2 or messages[-2].get("role") != "assistant":
        return
    i = len(messages) - 2
    content = messages[i].get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    uses_tools = any(b.get("type") == "tool_use" for b in blocks)
    if uses_tools and blocks[0].get("type") not in _THINKING:
        raise _Invalid(
            f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, "
            f"but found `{blocks[0].get('type')}`. When `thinking` is enabled, a final "
            f"`assistant` message must start with a thinking block"
        )


def _blocks(i: int, content: Any, *, may_be_empty: bool) -> list[dict[str, Any]]:
    """The message's content as blocks (a string is one text block)."""
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        blocks = content
    else:
        raise _Invalid(f"messages.{i}.content: Input should be a valid list")
    if not blocks and not may_be_empty:
        raise _Invalid(
            f"messages.{i}: all messages must have non-empty content except for the "
            f"optional final assistant message"
        )
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _Invalid(f"messages.{i}.content.{j}: Input should be an object")
        if block.get("type") == "text" and not str(block.get("text") or "").strip():
            raise _Invalid(f"messages.{i}.content.{j}: text content blocks must be non-empty")
    return blocks


def _answers(i: int, blocks: list[dict[str, Any]], tool_uses: list[str]) -> None:
    """A user turn: its tool_result blocks first, answering exactly `tool_uses`."""
    answered: set[str] = set()
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind not in _USER_BLOCKS:
            raise _Invalid(f"messages.{i}.content.{j}: a user turn cannot hold {kind!r} blocks")
        if kind == "image":
            _anthropic_image(f"messages.{i}.content.{j}", block)
        if kind != "tool_result":
            continue
        if j != len(answered):
            raise _Invalid(
                f"messages.{i}.content.{j}: tool_result blocks must come first in the "
                f"user turn, before any other content"
            )
        use_id = block.get("tool_use_id")
        if use_id not in tool_uses:
            raise _Invalid(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                f"`tool_result` blocks: {use_id}. Each `tool_result` block must have a "
                f"corresponding `tool_use` block in the previous message."
            )
        content = block.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _Invalid(f"messages.{i}.content.{j}.content: expected a string or a list")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise _Invalid(f"messages.{i}.content.{j}.is_error: expected a boolean")
        answered.add(use_id)
    missing = [use_id for use_id in tool_uses if use_id not in answered]
    if missing:
        _missing(i - 1, missing)


def _anthropic_image(where: str, block: dict[str, Any]) -> None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        assert isinstance(source, dict)
        media_type = source.get("media_type")
        if media_type not in ("image/png", "image/jpeg", "image/gif", "image/webp"):
            raise _Invalid(f"{where}.source.media_type: invalid value {media_type!r}")
        _base64(where, source.get("data"))
    elif kind == "url":
        assert isinstance(source, dict)
        if not isinstance(source.get("url"), str):
            raise _Invalid(f"{where}.source.url: Field required")
    else:
        raise _Invalid(f"{where}.source.type: invalid value {kind!r}")


def _missing(i: int, ids: list[str]) -> None:
    raise _Invalid(
        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
        f"immediately after: {', '.join(ids)}. Each `tool_use` block must have a "
        f"corresponding `tool_result` block in the next message."
    )


def _assistant(
    i: int,
    blocks: list[dict[str, Any]],
    signatures: Mapping[str, str],
    redactions: Container[str],
    seen: set[str],
) -> list[str]:
    """An assistant turn: thinking first and as issued; the ids of its tool_use blocks."""
    tool_uses: list[str] = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        where = f"messages.{i}.content.{j}"
        if kind not in _ASSISTANT_BLOCKS:
            raise _Invalid(f"{where}: an assistant turn cannot hold {kind!r} blocks")
        if kind in _THINKING:
            if any(b.get("type") not in _THINKING for b in blocks[:j]):
                raise _Invalid(f"{where}: thinking blocks must come first in the assistant turn")
            _thinking(where, block, signatures, redactions)
        elif kind == "tool_use":
            use_id = block.get("id")
            if not isinstance(use_id, str) or not _TOOL_ID.fullmatch(use_id):
                raise _Invalid(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
            if use_id in seen:
                raise _Invalid(f"{where}: `tool_use` ids must be unique, {use_id} is not")
            if not _nonempty(block.get("name")):
                raise _Invalid(f"{where}.name: Field required")
            if not isinstance(block.get("input"), dict):
                raise _Invalid(f"{where}.input: Input should be a valid dictionary")
            seen.add(use_id)
            tool_uses.append(use_id)
    return tool_uses


def _thinking(
    where: str, block: dict[str, Any], signatures: Mapping[str, str], redactions: Container[str]
) -> None:
    if block.get("type") == "redacted_thinking":
        if block.get("data") not in redactions:
            raise _Invalid(f"{where}: Invalid data in redacted_thinking block")
        return
    signature = block.get("signature")
    if not _nonempty(signature):
        raise _Invalid(f"{where}.signature: Field required")
    text = block.get("thinking")
    if not isinstance(text, str) or signatures.get(signature) != text:
        raise _Invalid(f"{where}: Invalid signature in thinking block")


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
