"""FastAPI dependencies: how a route (the chat API's or the gateway's) reaches the app's parts.

Everything lives on `app.state`, put there by the lifespan in `server.app`; nothing is
module-level, so several apps (tests, workers) never share state.

    @router.get("/x")
    async def x(store: StoreDep, manager: ManagerDep) -> ...
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request

from streamkeep.config import Settings
from streamkeep.generation import GenerationManager
from streamkeep.http.metrics import Metrics
from streamkeep.http.quotas import Quotas
from streamkeep.llm.registry import ModelRegistry
from streamkeep.store import ChatStore, Database


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


# The getters are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, a thread hop per dependency per request for a mere attribute read.
async def get_settings(request: Request) -> Settings:
    return cast(Settings, _state(request, "settings"))


async def get_database(request: Request) -> Database:
    return cast(Database, _state(request, "database"))


async def get_store(request: Request) -> ChatStore:
    return cast(ChatStore, _state(request, "store"))


async def get_registry(request: Request) -> ModelRegistry:
    return cast(ModelRegistry, _state(request, "registry"))


async def get_manager(request: Request) -> GenerationManager:
    return cast(GenerationManager, _state(request, "manager"))


async def get_quotas(request: Request) -> Quotas:
    return cast(Quotas, _state(request, "quotas"))


async def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, _state(request, "metrics"))


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StoreDep = Annotated[ChatStore, Depends(get_store)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
ManagerDep = Annotated[GenerationManager, Depends(get_manager)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
QuotasDep = Annotated[Quotas, Depends(get_quotas)]
