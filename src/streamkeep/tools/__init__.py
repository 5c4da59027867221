"""Tools the model may call: Python functions, built-ins and MCP servers' tools.

The loop that runs them is `streamkeep.generation.toolloop`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkeep.tools.base import Tool, ToolArgumentsError, ToolError
from streamkeep.tools.python import PythonTool, python_tool
from streamkeep.tools.registry import load_python_tools, registered_tools, tool
from streamkeep.tools.toolbox import Toolbox, UnknownTools

if TYPE_CHECKING:
    from streamkeep.tools.mcp import McpServers, McpTool

__all__ = [
    "McpServers",
    "McpTool",
    "PythonTool",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "Toolbox",
    "UnknownTools",
    "load_python_tools",
    "python_tool",
    "registered_tools",
    "tool",
]


def __getattr__(name: str) -> Any:
    # Imported when first asked for: the MCP SDK takes about a second to import, which
    # every user of `streamkeep.tools` would otherwise pay.
    if name in ("McpServers", "McpTool"):
        from streamkeep.tools import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
