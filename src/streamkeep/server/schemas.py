"""Request and response bodies of the HTTP API (validated at the edge, typed in OpenAPI).

Response shapes reuse the store's records so the API shows exactly what is kept.
Every string a request brings is `streamkeep.text.Text` (UTF-8 can encode it, no NUL).
Message length is checked against `settings.max_message_chars` in the routes (it is a
setting, not a constant), so here `content` only has to be non-blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from streamkeep.generation.steps import ToolOutput
from streamkeep.llm.types import ToolSpec
from streamkeep.store.records import (
    ApiKeyRecord,
    ChatRecord,
    MessageRecord,
    UsageGroup,
    UsageRow,
    UsageTotals,
    UserRecord,
)
from streamkeep.text import JSONObject, JSONValue, Text, check_text


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonBlank = Annotated[Text, AfterValidator(_not_blank)]
# Constraints before the validator, so that pydantic checks them on the str itself.
Title = Annotated[str, StringConstraints(max_length=500), BeforeValidator(check_text)]
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=200), BeforeValidator(check_text)
]


class _Body(BaseModel):
    # A typo in a field name is an error, not a silently ignored field.
    model_config = ConfigDict(extra="forbid")


ToolName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$"),
]
ToolNames = Annotated[
    list[ToolName],
    Field(max_length=128, description="Names of tools from `GET /api/tools`."),
]


class ChatCreate(_Body):
    title: Title | None = None
    model: ModelName | None = None
    system: Text | None = None
    tools: ToolNames | None = None


class ChatUpdate(_Body):
    title: Title | None = None
    model: ModelName | None = None
    active_leaf_id: Text | None = Field(
        default=None,
        description="Switch the chat's active branch to the one ending at this message "
        "(a UI's version arrows use it).",
    )
    tools: ToolNames | None = Field(
        default=None, description="Replace the chat's tools ([] for none)."
    )


class ClientTool(BaseModel):
    """A tool the client runs: the model may call it, the server never does."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: ToolName
    description: Text = ""
    input_schema: JSONObject = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        validation_alias=AliasChoices("input_schema", "inputSchema", "parameters"),
        description="The JSON schema of its arguments.",
    )

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.input_schema)


class FileIn(_Body):
    """An image sent with a message: the AI SDK's file part, its `url` a data URI."""

    type: Literal["file"] = "file"
    mediaType: Text = Field(
        default="", description="Ignored: the type is what the bytes are (PNG, JPEG, GIF, WebP)."
    )
    url: Text = Field(description="`data:image/png;base64,...`")
    filename: Text | None = None


class MessageCreate(_Body):
    content: NonBlank
    files: list[FileIn] = Field(
        default_factory=list,
        description="Images for the model (`max_images_per_message`, `max_image_bytes`): "
        "stored once each, and kept in the message as file parts with an `/api/images/` url.",
    )
    model: ModelName | None = None
    parent_id: Text | None = Field(
        default=None, description="Reply under this message (default: the active leaf)."
    )
    tools: ToolNames | None = Field(
        default=None, description="The tools this reply may call (default: the chat's)."
    )
    client_tools: list[ClientTool] = Field(
        default_factory=list,
        max_length=128,
        description="Tools the client runs: a reply calling one ends waiting for its "
        "result (`POST /api/messages/{message_id}/tool-results`).",
    )


class ToolResultIn(_Body):
    """A client's result of one call: `output`, or `errorText` when it failed."""

    toolCallId: Text  # the AI SDK's own field names
    output: JSONValue = None
    errorText: Text | None = None

    def outcome(self) -> ToolOutput:
        return ToolOutput(self.toolCallId, "", output=self.output, error=self.errorText)


class ToolResults(_Body):
    results: list[ToolResultIn] = Field(min_length=1, max_length=128)
    tools: ToolNames | None = None
    client_tools: list[ClientTool] = Field(default_factory=list, max_length=128)


class ToolInfo(BaseModel):
    name: str
    description: str
    #: the JSON schema of its arguments
    input_schema: dict[str, Any]
    #: "builtin", "python" or "mcp:SERVER"
    source: str


class ToolList(BaseModel):
    items: list[ToolInfo]


class MessageEdit(_Body):
    content: NonBlank


class ActiveGeneration(BaseModel):
    message_id: str
    #: the sequence number of the last event so far: resume with `?after=` up to it
    last_seq: int


class ChatDetail(ChatRecord):
    messages: list[MessageRecord]
    active_generation: ActiveGeneration | None = None


class ChatPage(BaseModel):
    items: list[ChatRecord]
    next_cursor: str | None


class StopResult(BaseModel):
    stopped: bool


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class UIMessageIn(BaseModel):
    """A useChat UIMessage; only the parts' text matters to the server."""

    model_config = ConfigDict(extra="allow")

    id: Text | None = None
    role: Literal["system", "user", "assistant", "tool"]
    parts: list[JSONObject] = Field(default_factory=list)


class UseChatRequest(BaseModel):
    """The body of the Vercel AI SDK's DefaultChatTransport (plus any `body` extras:
    `model`, `tools`, `clientTools`)."""

    model_config = ConfigDict(extra="allow")

    id: Annotated[str, StringConstraints(min_length=1, max_length=40), BeforeValidator(check_text)]
    messages: list[UIMessageIn]
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: Text | None = None  # the SDK's own field name
    model: ModelName | None = None
    tools: ToolNames | None = None
    clientTools: list[ClientTool] = Field(default_factory=list, max_length=128)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "A body that cannot be read (not UTF-8)"),
        (401, "Auth is on, and the request has no credentials or ones that do not work"),
        (404, "Unknown chat, message or model"),
        (409, "The chat already has a running generation"),
        (413, "Message longer than max_message_chars, or a body over max_body_bytes"),
        (422, "Malformed request"),
        (429, "Over a limit of the user's or API key's (`Retry-After` says when to retry)"),
        (503, "Shutting down, or the database is unreachable"),
    )
}


# One event of a UI message stream, as an SSE parser gives it: every event has its
# sequence number as `id` ([DONE] too), so `Last-Event-ID` can resume after any of them.
_SSE_EVENT = {
    "type": "object",
    "required": ["id", "data"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9]+$"}, "data": {"type": "string"}},
}
_STREAM_HEADERS = {
    name: {"description": text, "required": True, "schema": {"type": "string"}}
    for name, text in (
        ("x-streamkeep-chat-id", "The chat the reply belongs to"),
        ("x-streamkeep-message-id", "The assistant message being streamed"),
        ("x-vercel-ai-ui-message-stream", "The stream protocol's version: v1"),
    )
}


def _link(path: str, method: str, parameter: str, header: str) -> dict[str, Any]:
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{method}",
        "parameters": {parameter: f"$response.header.{header}"},
    }


_FROM_STREAM = {
    "message": _link("/api/messages/{message_id}", "get", "message_id", "x-streamkeep-message-id"),
    "regenerate": _link(
        "/api/messages/{message_id}/regenerate", "post", "message_id", "x-streamkeep-message-id"
    ),
    "chat": _link("/api/chats/{chat_id}", "get", "chat_id", "x-streamkeep-chat-id"),
    "resume": _link("/api/chats/{chat_id}/stream", "get", "chat_id", "x-streamkeep-chat-id"),
    "stop": _link("/api/chats/{chat_id}/stop", "post", "chat_id", "x-streamkeep-chat-id"),
}


def stream_doc(description: str) -> dict[str, Any]:
    """The OpenAPI response of a UI message stream: its events, headers and where its
    ids lead (the stored message, the chat)."""
    return {
        "description": description,
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        "headers": _STREAM_HEADERS,
        "links": _FROM_STREAM,
    }


# Identity


class Login(_Body):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=64), BeforeValidator(check_text)
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class OidcMethod(BaseModel):
    #: the provider's name, for "Sign in with NAME"
    name: str
    #: where the page's button goes: the start of the OIDC sign-in
    url: str


class AuthMethods(BaseModel):
    #: whether `POST /api/auth/login` (user name and password) is on
    password: bool
    #: the OIDC provider, when configured
    oidc: OidcMethod | None = None


class Me(BaseModel):
    #: false in the single-user default (no user exists yet), or with `--no-auth`
    auth: bool
    user: UserRecord | None
    #: the API key this request came with (None: the page's session, or auth off)
    key: ApiKeyRecord | None = None


class KeyCreate(_Body):
    name: (
        Annotated[str, StringConstraints(min_length=1, max_length=64), BeforeValidator(check_text)]
        | None
    ) = None
    models: list[ModelName] | None = Field(
        default=None, min_length=1, description="The models the key may use (absent: all)."
    )


class KeyCreated(ApiKeyRecord):
    #: the key itself: shown this once, the server keeps only its hash
    key: str


class KeyList(BaseModel):
    items: list[ApiKeyRecord]


# Usage and admin


def utc_when(value: object) -> object:
    """An ISO 8601 date (its midnight) or date and time, in UTC; one without a zone
    is taken as UTC."""
    if not isinstance(value, str):
        return value
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "want an ISO 8601 date or date and time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ValueError("out of range in UTC (years 1 to 9999)") from None


When = Annotated[datetime, BeforeValidator(utc_when)]


class UsageReport(BaseModel):
    """`GET /api/usage` and `streamkeep usage --format json`."""

    model_config = ConfigDict(populate_by_name=True)

    group_by: UsageGroup
    #: the period's start (inclusive) and end (exclusive), in UTC; null: open
    start: datetime | None = Field(alias="from")
    end: datetime | None = Field(alias="to")
    items: list[UsageRow]
    total: UsageTotals

    @classmethod
    def of(
        cls,
        group_by: UsageGroup,
        start: datetime | None,
        end: datetime | None,
        rows: Sequence[UsageRow],
    ) -> UsageReport:
        return cls(group_by=group_by, start=start, end=end, items=rows, total=UsageTotals.sum(rows))


class AdminUser(UserRecord):
    #: what the user's replies used, all time
    usage: UsageTotals


class AdminUserList(BaseModel):
    items: list[AdminUser]


class AdminDisabled(BaseModel):
    user: UserRecord
    #: the chats whose live reply this request stopped (stored `stopped`)
    stopped: list[str]


class AdminChat(ChatRecord):
    #: the owner's name; null: a chat of the single-user mode, nobody's
    owner: str | None


class AdminChatPage(BaseModel):
    items: list[AdminChat]
    next_cursor: str | None
