"""Tools the model may call, and the loop that runs them (see `streamkeep.tools.loop`)."""

from streamkeep.tools.base import Tool, ToolArgumentsError, ToolError
from streamkeep.tools.toolbox import Toolbox, UnknownTools

__all__ = ["Tool", "ToolArgumentsError", "ToolError", "Toolbox", "UnknownTools"]
