"""The `POST /v1/messages` request body (Anthropic's Messages API), validated at the edge.

Only what streamkeep acts on is modelled; unknown fields are ignored (`thinking`,
`top_k`, `service_tier`, `cache_control`, ...). Content given as a string is one text
block. `parse_messages_body` turns any malformed body into one `GatewayError` (400)
naming the field (`messages.1.content.0.text`). A user turn's image blocks are checked
and stored by `gateway.images`; images inside a tool_result are refused (not yet).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from streamkeep.gateway.errors import GatewayError, invalid_request
from streamkeep.gateway.schemas import json_object
from streamkeep.text import JSONObject, JSONValue, Text, check_text

IMAGES_REFUSED = "images in a tool_result are not supported yet"


def _blocks(value: Any) -> Any:
    """`"text"` -> `[{"type": "text", "text": "text"}]`."""
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _result_text(value: Any) -> Any:
    """A tool_result's content: a string, or text blocks joined into one."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of text blocks")
    texts: list[str] = []
    for i, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "image":
            raise ValueError(IMAGES_REFUSED)
        if kind != "text" or not isinstance(block.get("text"), str):
            raise ValueError(f"block {i} must be a text block")
        texts.append(check_text(block["text"]))
    return "\n".join(texts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TextBlock(_Model):
    type: Literal["text"]
    text: Text


class ImageSource(_Model):
    type: Literal["base64", "url"]
    media_type: Text | None = None  # base64: the claimed type (the bytes decide)
    data: Text | None = None  # base64
    url: Text | None = None  # url


class ImageBlock(_Model):
    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: Text = Field(min_length=1)
    name: Text = Field(min_length=1)
    input: JSONObject


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: Text = Field(min_length=1)
    content: Annotated[Text, BeforeValidator(_result_text)] = ""
    is_error: bool = False


class ThinkingBlock(_Model):
    type: Literal["thinking"]
    thinking: Text
    signature: Text | None = None


class RedactedThinkingBlock(_Model):
    type: Literal["redacted_thinking"]
    data: Text


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageIn(_Model):
    role: Literal["user", "assistant"]
    content: Annotated[list[Block], BeforeValidator(_blocks)]


class ToolDef(_Model):
    name: Text = Field(min_length=1)
    description: Text = ""
    input_schema: JSONObject


class ToolChoice(_Model):
    type: Literal["auto", "any", "tool", "none"]
    name: Text | None = None


class Metadata(_Model):
    user_id: Text | None = None


class MessagesBody(_Model):
    model: Text = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[MessageIn] = Field(min_length=1)
    system: Annotated[list[TextBlock] | None, BeforeValidator(_blocks)] = None
    stop_sequences: list[Text] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    stream: bool = False

    @property
    def system_text(self) -> str | None:
        return None if self.system is None else "\n".join(b.text for b in self.system)


def parse_messages_body(raw: bytes) -> MessagesBody:
    """Validate a raw request body; any problem is a 400 naming the field."""
    data = json_object(raw)
    try:
        body = MessagesBody.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    _check_semantics(body)
    return body


def _from_validation(exc: ValidationError) -> GatewayError:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(item) for item in first["loc"]) or "body"
    if first["type"] == "missing":
        return invalid_request(f"{param}: Field required", param)
    message = first["msg"].removeprefix("Value error, ")
    return invalid_request(f"{param}: {message}", param)


def _check_semantics(body: MessagesBody) -> None:
    """What the types alone cannot say: images only from the user, each with its
    source's field, and a named tool's name."""
    for i, msg in enumerate(body.messages):
        for j, block in enumerate(msg.content):
            where = f"messages.{i}.content.{j}"
            if isinstance(block, ImageBlock):
                if msg.role == "assistant":
                    raise invalid_request(f"{where}: image blocks are the user's", where)
                field = "data" if block.source.type == "base64" else "url"
                if getattr(block.source, field) is None:
                    param = f"{where}.source.{field}"
                    raise invalid_request(f"{param}: Field required", param)
            if msg.role == "user" and isinstance(
                block, ToolUseBlock | ThinkingBlock | RedactedThinkingBlock
            ):
                raise invalid_request(f"{where}: {block.type} blocks are the assistant's", where)
            if msg.role == "assistant" and isinstance(block, ToolResultBlock):
                raise invalid_request(f"{where}: tool_result blocks are the user's", where)
    choice = body.tool_choice
    if choice is not None and choice.type == "tool" and not choice.name:
        raise invalid_request("tool_choice.name: Field required", "tool_choice.name")


def openai_tool_choice(choice: ToolChoice | None) -> JSONValue:
    """Anthropic's tool_choice in the OpenAI words `ChatRequest` takes."""
    if choice is None:
        return None
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]
