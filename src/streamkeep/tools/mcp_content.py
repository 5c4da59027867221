"""How MCP tools look to the model: their names, and their results as values.

A tool is named `SERVER__TOOL`. MCP allows names (dots, up to 128 characters) that
providers refuse (`NAME_PATTERN`); such a name has its other characters replaced by `_`,
is cut, and ends with a hash of the tool's own name, so that two tools of a server never
share a name and a name stays the same across reconnections (chats keep tool names).

A result is its `structuredContent` when there is one, else the text of its content
(text items joined by newlines; an image, audio or binary resource as a short
placeholder, since the tool loop sends text); `isError` raises `ToolError` with that text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import mcp_types as types

from streamkeep.tools.base import NAME_PATTERN, ToolError

_OTHER_CHARACTERS = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_LENGTH = 8


def tool_name(server: str, tool: str) -> str:
    """The name the model calls `tool` of `server` by."""
    name = f"{server}__{tool}"
    if NAME_PATTERN.fullmatch(name):
        return name
    digest = hashlib.sha256(tool.encode()).hexdigest()[:_HASH_LENGTH]
    kept = _OTHER_CHARACTERS.sub("_", name)[: 64 - _HASH_LENGTH - 1]
    return f"{kept}_{digest}"


def result_value(result: types.CallToolResult) -> Any:
    """What a call returns to the tool loop; `ToolError` for a result with `isError`."""
    if result.is_error:
        raise ToolError(content_text(result.content) or "the tool failed without saying why")
    if result.structured_content is not None:
        return result.structured_content
    return content_text(result.content)


def content_text(content: Sequence[types.ContentBlock]) -> str:
    return "\n".join(_text(block) for block in content)


def _text(block: types.ContentBlock) -> str:
    match block:
        case types.TextContent():
            return block.text
        case types.ImageContent() | types.AudioContent():
            return f"[{block.mime_type}, {_decoded_size(block.data)} bytes]"
        case types.EmbeddedResource(resource=types.TextResourceContents() as text):
            return text.text
        case types.EmbeddedResource(resource=types.BlobResourceContents() as blob):
            kind = blob.mime_type or "binary"
            return f"[{blob.uri}: {kind}, {_decoded_size(blob.blob)} bytes]"
        case types.ResourceLink():
            return f"[resource {block.uri}]"
    return f"[{block.type}]"


def _decoded_size(data: str) -> int:
    """The size of base64 `data` once decoded, without decoding it."""
    return len(data) * 3 // 4 - data[-2:].count("=")
