"""The names MCP tools get and the values their results become."""

from __future__ import annotations

import base64
from typing import Any

import mcp_types as types
import pytest

from streamkeep.tools import ToolError
from streamkeep.tools.base import NAME_PATTERN
from streamkeep.tools.mcp_content import result_value, tool_name


def test_a_name_that_fits_is_the_server_and_the_tool() -> None:
    assert tool_name("files", "read_file") == "files__read_file"
    assert tool_name("my-server", "get-page") == "my-server__get-page"


def test_other_names_are_made_to_fit_distinct_and_stable() -> None:
    tools = ["echo.text", "echo_text", "echo text", "é", "x" * 128, "x" * 127 + "y"]
    names = [tool_name("server", tool) for tool in tools]
    assert all(NAME_PATTERN.fullmatch(name) for name in names)
    assert len(set(names)) == len(tools)
    assert names == [tool_name("server", tool) for tool in tools]
    assert names[0].startswith("server__echo_text_")


def result(*content: types.ContentBlock, **fields: Any) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), **fields)


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def test_one_text_is_that_text() -> None:
    assert result_value(result(text("42"))) == "42"


def test_structured_content_comes_first() -> None:
    value = {"city": "Oslo", "celsius": -3}
    assert result_value(result(text("Oslo: -3"), structured_content=value)) == value


def test_other_content_is_described_in_the_text() -> None:
    png = base64.b64encode(bytes(1234)).decode()
    content = [
        text("here:"),
        types.ImageContent(type="image", data=png, mime_type="image/png"),
        types.AudioContent(
            type="audio", data=base64.b64encode(b"abcde").decode(), mime_type="audio/wav"
        ),
        types.EmbeddedResource(
            type="resource", resource=types.TextResourceContents(uri="file:///a.txt", text="inside")
        ),
        types.EmbeddedResource(
            type="resource", resource=types.BlobResourceContents(uri="file:///b.bin", blob="AAE=")
        ),
        types.ResourceLink(type="resource_link", uri="file:///c.md", name="c"),
    ]
    assert result_value(result(*content)).splitlines() == [
        "here:",
        "[image/png, 1234 bytes]",
        "[audio/wav, 5 bytes]",
        "inside",
        "[file:///b.bin: binary, 2 bytes]",
        "[resource file:///c.md]",
    ]


def test_an_error_result_raises_its_text() -> None:
    with pytest.raises(ToolError, match=r"^no such city$"):
        result_value(result(text("no such city"), is_error=True))
    with pytest.raises(ToolError, match="without saying why"):
        result_value(result(is_error=True))
