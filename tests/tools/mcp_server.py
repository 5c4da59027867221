"""A real MCP server for the tests, built on the SDK's own `MCPServer`.

    python tests/tools/mcp_server.py --record FILE            (stdio)
    python tests/tools/mcp_server.py --record FILE --port N   (streamable HTTP on 127.0.0.1:N/mcp)

It appends to FILE what a test cannot see from outside: `pid N` when it starts,
`start` and `cancelled` for its slow tool.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TypedDict

import anyio
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("streamkeep-test")
record_path = ""


def record(line: str) -> None:
    with open(record_path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@server.tool(structured_output=False)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Weather(TypedDict):
    city: str
    celsius: float


@server.tool()
def weather(city: str) -> Weather:
    """The weather in a city."""
    return {"city": city, "celsius": 21.5}


@server.tool()
def fail(message: str) -> str:
    """Always fails, with this message."""
    raise ToolError(message)


@server.tool(structured_output=False)
async def slow(seconds: float = 30) -> str:
    """Sleep, recording its start and its cancellation."""
    record("start")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        record("cancelled")
        raise
    return "slept"


@server.tool(name="echo.text", structured_output=False)
def echo(text: str) -> str:
    """A name that providers refuse (a dot)."""
    return text


@server.tool(structured_output=False)
def picture() -> list[str | Image]:
    """Text and a 4-byte PNG."""
    return ["a picture:", Image(data=b"\x89PNG", format="png")]


@server.tool(structured_output=False)
def environment(name: str) -> str:
    """A variable of its environment, its working directory for `cwd`; "-" if unset."""
    return os.getcwd() if name == "cwd" else os.environ.get(name, "-")


@server.tool(structured_output=False)
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that called it; "-" if absent."""
    return (ctx.headers or {}).get(name, "-")


@server.tool(structured_output=False)
async def grow(ctx: Context) -> str:
    """Add the tool `extra`, and say that the tools changed."""
    server.add_tool(lambda: "extra", name="extra", description="Added by grow.")
    await ctx.notify_tools_changed()  # to listen streams (2026-07-28)
    await ctx.session.send_tool_list_changed()  # to the session (the handshake's protocol)
    return "grown"


def main() -> None:
    global record_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    record_path = args.record
    record(f"pid {os.getpid()}")
    if args.port is None:
        server.run()
    else:
        server.run("streamable-http", port=args.port)
    # Python's own exit takes about a second more (the SDK's threads); nothing is left to do.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
