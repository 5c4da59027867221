"""Tools the model may call, and the loop that runs them (see `streamkeep.tools.loop`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkeep.tools.base import Tool, ToolArgumentsError, ToolError
from streamkeep.tools.toolbox import Toolbox, UnknownTools

if TYPE_CHECKING:
    from streamkeep.tools.mcp import McpServers, McpTool

__all__ = [
    "McpServers",
    "McpTool",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "Toolbox",
    "UnknownTools",
]


def __getattr__(name: str) -> Any:
    # Imported when first asked for: the MCP SDK takes about a second to import, which
    # every user of `streamkeep.tools.base` would otherwise pay.
    if name in ("McpServers", "McpTool"):
        from streamkeep.tools import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
