"""The app factory and its lifespan.

`create_app(settings)` builds a FastAPI app; its lifespan opens the database (applying
migrations), the store, the model registry and the generation manager, and puts them on
`app.state`, where the dependencies of `http.deps` find them. Nothing is global: each
app (a test's, a worker's) has its own. The app serves the chat API's routes, the
OpenAI-compatible gateway's (`gateway.routes`) and the page.

Shutdown is two-phase. `begin_shutdown(app)` makes the manager refuse new generations at
once and gives live ones `shutdown_grace` to finish before storing them `interrupted`;
`streamkeep serve` calls it when the signal arrives (uvicorn otherwise waits for open
streams to close before the lifespan ends, so the grace period would never start). The
lifespan's own exit then awaits the same task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

import streamkeep
import streamkeep.server.observability as observability
from streamkeep.config import Settings, load_settings
from streamkeep.gateway.messages import router as messages_router
from streamkeep.gateway.responses import router as responses_router
from streamkeep.gateway.routes import router as gateway_router
from streamkeep.generation import GenerationManager
from streamkeep.generation.manager import default_worker_id
from streamkeep.http.auth import AuthGate
from streamkeep.http.limits import Limiter
from streamkeep.http.metrics import Metrics
from streamkeep.http.proxy_identity import TrustedHeaders
from streamkeep.http.quotas import Quotas
from streamkeep.http.request_id import RequestIds
from streamkeep.http.responses import RAW_SEND
from streamkeep.http.tokens import JwtVerifier
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.runtime import EmbeddedRuntime
from streamkeep.scaleout import Cluster
from streamkeep.scaleout import connect as connect_redis
from streamkeep.server.docs import install as install_docs
from streamkeep.server.errors import body_too_large
from streamkeep.server.errors import install as install_errors
from streamkeep.server.oidc import OidcSignIn
from streamkeep.server.page import PageMount
from streamkeep.server.routes import (
    admin,
    chats,
    identity,
    images,
    messages,
    ops,
    streams,
    tools,
    usage,
    usechat,
)
from streamkeep.server.security import Guard, HostPolicy
from streamkeep.store import ChatStore, Database
from streamkeep.telemetry import Export
from streamkeep.tools import Toolbox

WEB_DIR = Path(streamkeep.__file__).parent / "web"

DESCRIPTION = """\
Stream an LLM's answer token by token and keep every message.

Streams are Server-Sent Events in the Vercel AI SDK UI Message Stream protocol v1; every
event has an `id:` so `Last-Event-ID` (or `?after=N`) resumes exactly after it.
Errors are `{"error": {"type", "message"}}`; an unknown model is a 404 (`unknown_model`).
`PATCH /api/chats/{id}` takes `active_leaf_id` to switch the chat's active branch (each
message of `GET /api/chats/{id}` lists its `sibling_ids`).

The reference, with the stream protocol and the configuration, is docs/api.md in the
repository.
"""


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Middleware that pass every response body message on as it came: they watch or amend
# the response start, or read the request, and nothing else (read in FastAPI 0.165 and
# Starlette 1.10). Names, not classes: some are FastAPI's private ones.
BODY_NEUTRAL = frozenset(
    {
        "starlette.middleware.errors.ServerErrorMiddleware",
        "fastapi.telemetry._asgi.ExceptionTelemetryMiddleware",
        "fastapi._body_limit.AppBodyLimitMiddleware",
        "starlette.middleware.body_limit.RequestBodyLimitMiddleware",
        "fastapi._body_limit._BodyLimitExceptionMiddleware",
        _name(Guard),
        "starlette.middleware.exceptions.ExceptionMiddleware",
        "fastapi.middleware.asyncexitstack.AsyncExitStackMiddleware",
    }
)


class App(FastAPI):
    """The FastAPI app, refusing a body over the limit before routing, and sending
    stream bodies past the middleware when no middleware would change them.

    Every middleware wraps `send` in a coroutine of its own, and a stream sends a body
    message per wake-up through all of them (eight in this FastAPI; more CPU per chunk
    than it seems: README, Benchmarks). When every middleware of the built stack is in
    `BODY_NEUTRAL`, the app leaves the ASGI server's own `send` in each request's scope
    (`RAW_SEND`) and `SSEResponse` writes its body there; its start still goes through
    the stack. Any other middleware (one that compresses or rewrites bodies) turns that
    off for the whole app, so it sees every chunk: `direct_body` says which it is.

    The body limit (`max_body_size`, from `settings.max_body_bytes`) is FastAPI's: it
    counts a body as it is read, chunked ones included, and `server.errors` answers its
    413. A body whose Content-Length says it is over the limit is refused here, before
    routing, so that a route that never reads its body answers in the same shape too.
    """

    direct_body = False  # until the stack is built (at the lifespan's start)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        self.direct_body = _bodies_pass_unchanged(stack, self.router)
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.direct_body:
                scope[RAW_SEND] = send  # the server's own: bodies skip `RequestIds` too
            await self._request_ids(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    @functools.cached_property
    def _request_ids(self) -> RequestIds:
        # Outside everything, Starlette's own error middleware included: every response
        # gets its `x-request-id` (see `http.request_id`).
        return RequestIds(self._limited, getattr(self.state, "metrics", None))

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_size
        if limit is not None and _declared_length(scope) > limit:
            await body_too_large(limit)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _bodies_pass_unchanged(stack: ASGIApp, end: ASGIApp) -> bool:
    """Whether every middleware from `stack` down to `end` is in `BODY_NEUTRAL` (each
    names the next as `app`; one that does not cannot be seen past)."""
    node: object = stack
    while node is not end:
        if _name(type(node)) not in BODY_NEUTRAL:
            return False
        node = getattr(node, "app", None)
    return True


def _declared_length(scope: Scope) -> int:
    """The request's Content-Length (0 when absent or unreadable: then the body is
    counted as it is read)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def create_app(settings: Settings | None = None, *, runtime: EmbeddedRuntime | None = None) -> App:
    """`runtime`: the embedded model's (default: from the settings, prepared in the
    background when missing; see `llm.runtime`)."""
    settings = settings or load_settings()
    app = App(
        title="streamkeep",
        version=getattr(streamkeep, "__version__", "0"),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package's files instead of a CDN: `docs`
        redoc_url=None,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.worker_id = worker_id = default_worker_id()
    app.state.telemetry = observability.install(app, metrics, worker_id)
    app.state.oidc = OidcSignIn.from_settings(settings)
    app.state.runtime = runtime
    install_errors(app)
    app.add_middleware(Guard, policy=HostPolicy(settings.host, settings.allowed_hosts))
    # Matched in this order, each router's routes in turn: the gateway's three APIs
    # (one POST per call, the hot path) and the chat API's message POST come first, so
    # a call is not tested against every other route before its own (7% of the
    # gateway's CPU per call was FastAPI's matching: README, Benchmarks).
    routers = (
        gateway_router,
        messages_router,
        responses_router,
        messages.router,
        chats.router,
        streams.router,
        usechat.router,
        identity.router,
        usage.router,
        admin.router,
        tools.router,
        images.router,
        ops.router,
    )
    for router in routers:
        app.include_router(router)
    install_docs(app)
    if (WEB_DIR / "index.html").is_file():
        # Mounted last: it answers every path no route above claims.
        app.router.routes.append(PageMount(WEB_DIR, app.router.routes))
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    export: Export | None = app.state.telemetry
    tracer_provider = export.tracer_provider if export is not None else None
    database = Database.from_url(settings.resolved_database_url)
    metrics.watch_database(database)
    runtime: EmbeddedRuntime | None = app.state.runtime
    if runtime is None and any(c.kind == "local" for c in settings.all_providers().values()):
        runtime = EmbeddedRuntime.from_settings(settings)
    registry = ModelRegistry(
        settings,
        tracer_provider=tracer_provider,
        meter_provider=export.meter_provider if export is not None else None,
        observer=metrics,
        runtime=runtime,
    )
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    leases: asyncio.Task[None] | None = None
    toolbox: Toolbox | None = None
    try:
        await database.upgrade()
        store = ChatStore(database)
        worker_id: str = app.state.worker_id
        cluster = None
        if redis is not None:
            cluster = Cluster.from_settings(redis, store, settings, worker_id)
        toolbox = Toolbox.from_settings(settings.tools)
        await toolbox.start()
        manager = GenerationManager(
            store,
            registry,
            settings,
            worker_id=worker_id,
            cluster=cluster,
            toolbox=toolbox,
            tracer_provider=tracer_provider,
        )
        observability.watch(metrics, database, manager, cluster)
        await manager.start()
        registry.prepare()
        if runtime is not None:
            runtime.start()  # in the background: the server answers meanwhile
        app.state.database, app.state.store = database, store
        limiter = (
            Limiter.with_redis(redis, settings.redis_prefix)
            if redis is not None
            else Limiter.in_memory()
        )
        quotas = Quotas(limiter)
        app.state.quotas = quotas
        app.state.auth = auth = AuthGate(
            store,
            forced_off=settings.no_auth,
            limiter=limiter,
            limits=settings.limits,
            jwt=JwtVerifier.from_settings(settings),
            proxy=TrustedHeaders.from_settings(settings),
            always_on=settings.external_identity,
        )
        await auth.start()
        leases = asyncio.create_task(quotas.run(), name="limit-leases")
        app.state.registry, app.state.manager, app.state.redis = registry, manager, redis
        app.state.shutdown = None
        if settings.gc_freeze:
            # Everything made so far (modules, the app, its routes) lives as long as the
            # process: out of the collector's sight, a full collection no longer walks it.
            # Process-wide, hence the setting; what it saves: README, Benchmarks.
            gc.freeze()
        yield
        await begin_shutdown(app)
        await quotas.aclose()
    finally:
        if leases is not None:
            leases.cancel()
        await metrics.aclose()
        if runtime is not None:
            await runtime.aclose()
        if toolbox is not None:
            await toolbox.aclose()
        await registry.aclose()
        if redis is not None:
            await redis.aclose()
        await database.dispose()
        await observability.shutdown(export)


def begin_shutdown(app: FastAPI) -> asyncio.Task[None]:
    """Start (once) the manager's shutdown; the returned task ends when it is done."""
    task: asyncio.Task[None] | None = getattr(app.state, "shutdown", None)
    if task is None:
        manager: GenerationManager = app.state.manager
        task = asyncio.get_running_loop().create_task(manager.shutdown())
        app.state.shutdown = task
    return task
