"""The tools replies may call: `GET /api/tools`."""

from __future__ import annotations

from fastapi import APIRouter

from streamkeep.http.auth import CallerDep
from streamkeep.http.deps import ManagerDep
from streamkeep.server.schemas import ERROR_RESPONSES, ToolInfo, ToolList

router = APIRouter(tags=["tools"], responses=ERROR_RESPONSES)


@router.get("/api/tools", response_model=ToolList)
async def list_tools(manager: ManagerDep, caller: CallerDep) -> ToolList:
    """Every tool of the server, for any signed-in caller: built-ins, Python tools and
    the tools of the MCP servers connected now."""
    del caller  # asked for its check: with auth on, only a signed-in caller may list
    items = [
        ToolInfo(
            name=tool.name,
            description=tool.description,
            input_schema=tool.parameters,
            source=tool.source,
        )
        for tool in manager.toolbox.all()
    ]
    return ToolList(items=items)
