"""Operations: liveness, readiness (database, and Redis when configured), metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from streamkeep.http.deps import DatabaseDep, MetricsDep, SettingsDep

router = APIRouter(tags=["operations"])

# A readiness probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request, database: DatabaseDep, settings: SettingsDep) -> Response:
    """200 when the database (and Redis, when configured) answers and the server is not
    shutting down; else 503 naming what is wrong."""
    checks: dict[str, Any] = {"database": await _check_database(database.ping)}
    if getattr(request.app.state, "shutdown", None) is not None:
        checks["generations"] = "shutting down"  # send new work elsewhere
    if settings.redis_url:
        checks["redis"] = await _check_redis(request.app.state.redis)
    ok = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "checks": checks}
    if not ok:
        failed = ", ".join(k for k, v in checks.items() if v != "ok")
        body["error"] = {"type": "not_ready", "message": f"unreachable: {failed}"}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _check_database(ping: Any) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return "ok" if await ping() else "unreachable"
    except TimeoutError:
        return "timeout"


async def _check_redis(client: aioredis.Redis) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await client.ping()
    except TimeoutError:
        return "timeout"
    except (aioredis.RedisError, OSError) as exc:
        return f"unreachable: {exc}"
    return "ok"


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    """Prometheus text exposition of this app's metrics."""
    return Response(m.render(), media_type=m.content_type)
