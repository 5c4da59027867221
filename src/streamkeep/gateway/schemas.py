"""The `POST /v1/chat/completions` request body, validated at the edge.

Only what streamkeep acts on is modelled. Any other top-level field (`logit_bias`,
`frequency_penalty`, vLLM's `top_k`, ...) is kept in `passthrough` for an
OpenAI-compatible provider, as free-form JSON under the text rule below; a field
whose answer streamkeep could not keep (`audio` output, `n` > 1) is refused.
`parse_body` turns any malformed body into one `GatewayError` (400)
whose `param` names the offending field the way OpenAI does (`messages[1].content`).

Unions are avoided in field types on purpose: pydantic puts the union member's name
into an error's location (`content.str`), which would garble `param`. Content given as
a list of text parts is joined into one string by a before-validator instead; a user
message's `image_url` parts are taken out of it first, into `image_urls` (checked and
stored by `gateway.images`).

Every string is `streamkeep.text.Text` (free-form JSON: `JSONValue`), the chat API's
rule: text UTF-8 cannot encode, or holding NUL, is refused naming its field. orjson
refuses a lone surrogate escape while parsing already; NUL gets this far.
`check_lengths` applies `settings.max_message_chars` to every message (413).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from streamkeep.gateway.errors import GatewayError, invalid_request
from streamkeep.text import JSONObject, JSONValue, Text, check_text

MessageRole = Literal["system", "developer", "user", "assistant", "tool"]


def _join_text_parts(value: Any) -> Any:
    """`"text"` or `[{"type": "text", "text": "..."}, ...]` -> one string."""
    if not isinstance(value, list):
        return value
    texts: list[str] = []
    for i, part in enumerate(value):
        if isinstance(part, dict) and part.get("type") == "image_url":
            raise ValueError(
                f"content part {i}: an image_url part is taken in a user message, "
                "with a string 'url' (image_url.url)"
            )
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise ValueError(f"content part {i} must be an object with a string 'text'")
        if part.get("type", "text") != "text":
            raise ValueError(
                f"content part {i} has type {part.get('type')!r}; only 'text' parts are supported"
            )
        try:
            texts.append(check_text(part["text"]))
        except ValueError as exc:
            raise ValueError(f"content part {i}: {exc}") from None
    return "\n".join(texts)


def _stop_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and isinstance((value.get("function") or {}).get("name"), str):
        return value
    raise ValueError(
        "tool_choice must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}'
    )


Content = Annotated[Text | None, BeforeValidator(_join_text_parts)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class FunctionCallIn(_Model):
    name: Text
    arguments: Text = ""


class ToolCallIn(_Model):
    id: Text
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Model):
    role: MessageRole
    content: Content = None
    name: Text | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Text | None = None
    # Some OpenAI-compatible servers (DeepSeek, vLLM) echo reasoning back this way.
    reasoning_content: Text | None = None
    # The urls (data URIs) of a user message's `image_url` parts, in order; filled from
    # `content` only (what a client sends under this name is replaced).
    image_urls: SkipJsonSchema[list[Text]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _take_images(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {**data, "image_urls": []}
        content = data.get("content")
        if not isinstance(content, list):
            return data
        urls: list[Any] = []
        rest: list[Any] = []
        for part in content:
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else image
            taken = isinstance(part, dict) and part.get("type") == "image_url"
            if taken and data.get("role") == "user" and isinstance(url, str):
                urls.append(url)
            else:  # anything else is the content validator's to take or refuse
                rest.append(part)
        return {**data, "content": rest, "image_urls": urls}


class FunctionDef(_Model):
    name: Text = Field(min_length=1)
    description: Text = ""
    parameters: JSONObject | None = None
    strict: bool | None = None


class ToolIn(_Model):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Model):
    include_usage: bool = False


class ChatCompletionBody(_Model):
    # Fields not modelled here are kept (`passthrough`), each checked as JSON.
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, JSONValue] = Field(init=False)

    model: Text = Field(min_length=1)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Annotated[JSONValue, BeforeValidator(_tool_choice)] = None
    parallel_tool_calls: bool | None = None
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: Annotated[list[Text] | None, BeforeValidator(_stop_list)] = None
    seed: int | None = None
    response_format: JSONObject | None = None
    reasoning_effort: Text | None = None
    user: Text | None = None

    @property
    def passthrough(self) -> dict[str, Any]:
        """The body's top-level fields streamkeep does not model, as they came."""
        return dict(self.model_extra or {})

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body's JSON object, or a 400 saying why it is none."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    return data


def parse_body(raw: bytes) -> ChatCompletionBody:
    """Validate a raw request body; any problem is a 400 naming the field."""
    data = json_object(raw)
    try:
        body = ChatCompletionBody.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    _check_semantics(body)
    return body


def _from_validation(exc: ValidationError) -> GatewayError:
    first = exc.errors(include_url=False)[0]
    param = _param(first["loc"])
    if first["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param)
    message = first["msg"].removeprefix("Value error, ")
    return invalid_request(f"Invalid value for '{param}': {message}", param)


def _param(loc: tuple[int | str, ...]) -> str:
    """("messages", 1, "content") -> "messages[1].content"."""
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
    return out or "body"


def _check_semantics(body: ChatCompletionBody) -> None:
    """What the types alone cannot say: one choice only, text output only, and each
    role's own fields."""
    if body.n is not None and body.n != 1:
        raise invalid_request(
            f"n={body.n} is not supported: streamkeep keeps one reply per call, so 'n' "
            "must be 1 (or left out).",
            "n",
        )
    extra = body.passthrough
    if extra.get("audio") is not None or extra.get("modalities") not in (None, ["text"]):
        param = "audio" if extra.get("audio") is not None else "modalities"
        raise invalid_request(
            f"'{param}' is not supported: streamkeep keeps a text reply, so audio output "
            "cannot be asked for ('modalities' may only be [\"text\"]).",
            param,
        )
    for i, msg in enumerate(body.messages):
        where = f"messages[{i}]"
        if msg.role == "tool" and not msg.tool_call_id:
            raise invalid_request(
                f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id"
            )
        if msg.role == "assistant":
            if msg.content is None and not msg.tool_calls:
                raise invalid_request(
                    f"'{where}.content' is required unless 'tool_calls' is given.",
                    f"{where}.content",
                )
        elif msg.content is None:
            raise invalid_request(
                f"Missing required parameter: '{where}.content'.", f"{where}.content"
            )


def check_lengths(body: ChatCompletionBody, max_chars: int) -> None:
    """Every message within `max_chars` (`settings.max_message_chars`, the chat API's
    limit): its content (all its parts together), its reasoning and each tool call's
    arguments. A 413 like the chat API's, before anything is stored or sent."""
    for i, msg in enumerate(body.messages):
        texts = [("content", msg.content), ("reasoning_content", msg.reasoning_content)]
        texts += [
            (f"tool_calls[{j}].function.arguments", call.function.arguments)
            for j, call in enumerate(msg.tool_calls or [])
        ]
        for field, text in texts:
            if text is not None and len(text) > max_chars:
                param = f"messages[{i}].{field}"
                raise GatewayError(
                    413,
                    f"'{param}' has {len(text)} characters; the limit is {max_chars}.",
                    param=param,
                    code="message_too_long",
                )
