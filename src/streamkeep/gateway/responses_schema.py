"""The `POST /v1/responses` request body (OpenAI's Responses API), validated at the edge.

Only what streamkeep acts on is modelled; other fields are ignored (`reasoning`, `text`,
`truncation`, `include`, `prompt_cache_key`, `service_tier`, ...). `input` is a string
(one user message) or a list of items:

    {"role": "user" | "system" | "developer" | "assistant", "content": str | [parts]}
        (with or without "type": "message"; parts are input_text / output_text)
    {"type": "function_call", "call_id", "name", "arguments"}
    {"type": "function_call_output", "call_id", "output": str | [input_text parts]}
    {"type": "reasoning", ...}     accepted and left out: its text is the provider's own

A user message's `input_image` parts (`image_url`: a data: URI, or an http(s) URL when
`fetch_image_urls` is on) are its images. Items of other types (`item_reference`,
built-in tool calls) are a 400 naming the item. `parse_responses_body` turns any malformed body into
one `GatewayError` (400) whose `param` names the field the way OpenAI does
(`input[1].content`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from streamkeep.gateway.errors import GatewayError, invalid_request
from streamkeep.gateway.schemas import json_object
from streamkeep.text import JSONObject, JSONValue, Text, check_text

_TAGS = frozenset(("message", "function_call", "function_call_output", "reasoning"))
_TEXT_PARTS = frozenset(("input_text", "output_text", "text", "summary_text", "reasoning_text"))


def _content_text(value: Any) -> str:
    """A message's `content`, a string or a list of text parts, as one string (a user
    message's `input_image` parts are taken out first: `MessageItem._take_images`)."""
    if isinstance(value, str):
        return str(check_text(value))
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of content parts")
    texts: list[str] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image":
            raise ValueError(
                f"part {i}: an input_image part is taken in a user message, with an "
                "'image_url' (a data: URI or an http(s) URL; 'file_id' is not supported)"
            )
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise ValueError(f"part {i} must be an input_text or output_text part with a 'text'")
        try:
            texts.append(check_text(part["text"]))
        except ValueError as exc:
            raise ValueError(f"part {i}: {exc}") from None
    return "\n".join(texts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MessageItem(_Model):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str
    # The `image_url`s of a user message's `input_image` parts, in order; filled from
    # `content` only (what a client sends under this name is replaced).
    image_urls: SkipJsonSchema[list[Text]] = Field(default_factory=list)

    _text = field_validator("content", mode="before")(_content_text)

    @model_validator(mode="before")
    @classmethod
    def _take_images(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {**data, "image_urls": []}
        content = data.get("content")
        if data.get("role") != "user" or not isinstance(content, list):
            return data
        urls: list[Any] = []
        rest: list[Any] = []
        for part in content:
            url = part.get("image_url") if isinstance(part, dict) else None
            if (
                isinstance(part, dict)
                and part.get("type") == "input_image"
                and isinstance(url, str)
            ):
                urls.append(url)
            else:  # anything else is the content validator's to take or refuse
                rest.append(part)
        return {**data, "content": rest, "image_urls": urls}


class FunctionCallItem(_Model):
    type: Literal["function_call"]
    call_id: Text = Field(min_length=1)
    name: Text = Field(min_length=1)
    arguments: Text = ""


class FunctionCallOutputItem(_Model):
    type: Literal["function_call_output"]
    call_id: Text = Field(min_length=1)
    output: str

    _text = field_validator("output", mode="before")(_content_text)


class ReasoningItem(_Model):
    type: Literal["reasoning"]


InputItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem,
    Field(discriminator="type"),
]


class FunctionTool(_Model):
    type: Literal["function"]
    name: Text = Field(min_length=1)
    description: Text | None = None
    parameters: JSONObject | None = None
    strict: bool | None = None


class ResponsesBody(_Model):
    model: Text = Field(min_length=1)
    input: list[InputItem]
    instructions: Text | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: JSONValue = None
    parallel_tool_calls: bool | None = None
    previous_response_id: Text | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    metadata: dict[str, Text] | None = None
    user: Text | None = None

    def echo(self) -> dict[str, Any]:
        """The request's fields a `response` object repeats."""
        return {
            "instructions": self.instructions,
            "tools": [t.model_dump(exclude_none=True) for t in self.tools or []],
            "tool_choice": self.tool_choice if self.tool_choice is not None else "auto",
            "parallel_tool_calls": (
                self.parallel_tool_calls if self.parallel_tool_calls is not None else True
            ),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata or {},
            "previous_response_id": self.previous_response_id,
            "background": self.background,
            "store": self.store,
            "user": self.user,
        }


def parse_responses_body(raw: bytes) -> ResponsesBody:
    """Validate a raw request body; any problem is a 400 naming the field."""
    data = json_object(raw)
    raw_input = data.get("input")
    if isinstance(raw_input, str):
        data["input"] = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list):
        data["input"] = [_typed(item, i) for i, item in enumerate(raw_input)]
    _check_tools(data.get("tools"))
    try:
        body = ResponsesBody.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    _check_semantics(body)
    return body


def _typed(item: Any, index: int) -> Any:
    """An input item with its `type` (a message may leave it out), or a 400 for an item
    of a type streamkeep does not take."""
    if not isinstance(item, dict):
        raise invalid_request(
            f"Invalid value for 'input[{index}]': must be an object.", f"input[{index}]"
        )
    kind = item.get("type", "message" if "role" in item else None)
    if kind not in ("message", "function_call", "function_call_output", "reasoning"):
        raise invalid_request(
            f"Invalid value for 'input[{index}].type': {kind!r} items are not supported; "
            "use messages, function_call and function_call_output items.",
            f"input[{index}].type",
        )
    return {**item, "type": kind}


def _from_validation(exc: ValidationError) -> GatewayError:
    first = exc.errors(include_url=False)[0]
    # A union's member (its tag, `function_call`) is pydantic's, not the client's: drop it.
    loc = [item for item in first["loc"] if item not in _TAGS]
    param = ""
    for item in loc:
        param += f"[{item}]" if isinstance(item, int) else (f".{item}" if param else str(item))
    param = param or "body"
    if first["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param)
    message = first["msg"].removeprefix("Value error, ")
    return invalid_request(f"Invalid value for '{param}': {message}", param)


def _check_tools(tools: Any) -> None:
    """Built-in tools (web_search, file_search, ...) are OpenAI's own: a clear 400."""
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        if isinstance(tool, dict) and tool.get("type") != "function":
            raise invalid_request(
                f"Invalid value for 'tools[{i}].type': {tool.get('type')!r} tools are not "
                "supported; only function tools are.",
                f"tools[{i}].type",
            )


def _check_semantics(body: ResponsesBody) -> None:
    """What the types alone cannot say."""
    if not body.input:
        raise invalid_request("'input' must not be empty.", "input")
    if body.background and not body.store:
        raise invalid_request(
            "A background response must be stored: 'store' must be true.", "background"
        )
    choice = body.tool_choice
    if choice is None or choice in ("none", "auto", "required"):
        return
    if not (isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name")):
        raise invalid_request(
            "Invalid value for 'tool_choice': must be 'none', 'auto', 'required' or "
            '{"type": "function", "name": ...}.',
            "tool_choice",
        )
