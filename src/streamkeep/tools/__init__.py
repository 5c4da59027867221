"""Tools the model may call: Python functions, built-ins and MCP servers' tools.

The loop that runs them is `streamkeep.generation.toolloop`.
"""

from streamkeep.tools.base import Tool, ToolArgumentsError, ToolError
from streamkeep.tools.python import PythonTool, python_tool
from streamkeep.tools.registry import load_python_tools, registered_tools, tool
from streamkeep.tools.toolbox import Toolbox, UnknownTools

__all__ = [
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
