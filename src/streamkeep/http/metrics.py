"""Prometheus metrics of one app, in its own CollectorRegistry (no global registry:
two apps in one process, as in tests, never share or clash).

Counting stays off the token path: relayed chunks are counted per stream (when it
ends), provider calls once per call (`llm.tracing.CallObserver`), generation outcomes
once per generation, HTTP requests once per request (`http.request_id`), database
transactions and Redis pipelines once each; queue depths and the checkpoint lag are
read only when scraped.

Labels stay bounded: no ids; a model name is a label only for the first
`MAX_MODEL_LABELS` names seen (a pass-through provider takes any name), then `other`;
a route is its template (`/api/chats/{chat_id}`), or `unmatched`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from starlette.types import Scope

    from streamkeep.generation import Generation
    from streamkeep.llm.tracing import CallSummary
    from streamkeep.store import Database

_WRITE_VERBS = ("insert", "update", "delete")
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_RATE_BUCKETS = (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0, 200.0, 400.0, 1000.0)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0)
MAX_MODEL_LABELS = 50
OTHER = "other"


class Backlogged(Protocol):
    """A client stream that can tell how many frames it has not written yet."""

    def backlog(self) -> int: ...


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.generations_started = Counter(
            "streamkeep_generations_started", "Generations started", registry=r
        )
        self.generations_finished = Counter(
            "streamkeep_generations_finished",
            "Generations finished, by the status their message ended with and model",
            ["status", "model"],
            registry=r,
        )
        self.active_generations = Gauge(
            "streamkeep_active_generations", "Generations running now", registry=r
        )
        self.active_streams = Gauge(
            "streamkeep_active_streams", "Clients subscribed to a stream now", registry=r
        )
        self.relayed_chunks = Counter(
            "streamkeep_relayed_chunks",
            "SSE events written to clients (counted when each stream ends)",
            registry=r,
        )
        self.ttft = Histogram(
            "streamkeep_time_to_first_token_seconds",
            "From the request that started a generation to its first token",
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.db_statements = Counter(
            "streamkeep_db_statements",
            "SQL statements executed, by kind (write = INSERT/UPDATE/DELETE)",
            ["kind"],
            registry=r,
        )
        self.db_commits = Counter("streamkeep_db_commits", "Transactions committed", registry=r)
        self.db_seconds = Histogram(
            "streamkeep_db_transaction_duration_seconds",
            "Database transactions, from taking a connection to the end, by kind (read/write)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "streamkeep_redis_flush_duration_seconds",
            "Round trips of the pipelines that write live frames to Redis",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_queued = Gauge(
            "streamkeep_relay_queue_depth",
            "Frames queued for the next Redis pipeline (0 without Redis)",
            registry=r,
        )
        # Each client stream's frames not yet written to it, read when scraped (no
        # per-chunk work): a slow or stalled client shows in the max.
        self._streams: set[Backlogged] = set()
        self.stream_backlog = Gauge(
            "streamkeep_stream_backlog_frames",
            "Frames of live generations not yet written to their clients, over this "
            "worker's streams",
            registry=r,
        )
        self.stream_backlog.set_function(lambda: sum(s.backlog() for s in list(self._streams)))
        self.stream_backlog_max = Gauge(
            "streamkeep_stream_backlog_frames_max",
            "The most frames any one client stream of this worker has not been written yet",
            registry=r,
        )
        self.stream_backlog_max.set_function(
            lambda: max((s.backlog() for s in list(self._streams)), default=0)
        )
        self.checkpoint_lag = Gauge(
            "streamkeep_checkpoint_lag_seconds",
            "Seconds since the checkpointer last stored every live reply's progress",
            registry=r,
        )
        self.model_ttft = Histogram(
            "streamkeep_model_time_to_first_token_seconds",
            "From a provider call's start to its first event, by model",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.model_rate = Histogram(
            "streamkeep_model_output_tokens_per_second",
            "Output tokens per second of a provider call after its first event, by model",
            ["model"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.provider_calls = Counter(
            "streamkeep_provider_calls",
            "Provider calls, by provider and outcome (ok, error, cancelled)",
            ["provider", "outcome"],
            registry=r,
        )
        self.provider_errors = Counter(
            "streamkeep_provider_errors",
            "Provider calls that failed, by provider and kind (HTTP status or error class)",
            ["provider", "kind"],
            registry=r,
        )
        self.provider_retries = Counter(
            "streamkeep_provider_retries",
            "Provider requests retried, by provider and the kind of error retried",
            ["provider", "kind"],
            registry=r,
        )
        self.http_requests = Counter(
            "streamkeep_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "streamkeep_http_request_duration_seconds",
            "HTTP requests, to the end of their response (a stream's end), by route",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._models: set[str] = set()
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # One waiter per running generation, to count its outcome when it ends.
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def track(self, generation: Generation) -> bool:
        """Count a generation this app started; False if it was counted already (a
        retry that joined it) or is over."""
        if generation.id in self._watchers or generation.done.is_set():
            return False
        self.generations_started.inc()
        self.active_generations.inc()
        self._watchers[generation.id] = asyncio.create_task(self._watch(generation))
        return True

    async def _watch(self, generation: Generation) -> None:
        try:
            await generation.wait()
            model = self.model_label(generation.model)
            self.generations_finished.labels(generation.status, model).inc()
        finally:
            self.active_generations.dec()
            self._watchers.pop(generation.id, None)

    async def aclose(self) -> None:
        watchers = list(self._watchers.values())
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data

    def watch_database(self, database: Database) -> None:
        """Count statements and commits of `database` (for writes-per-message numbers)."""
        writes = self.db_statements.labels("write")
        reads = self.db_statements.labels("read")

        def on_statement(statement: str, many: bool) -> None:
            verb = statement.lstrip()[:6].lower()
            (writes if verb.startswith(_WRITE_VERBS) else reads).inc()

        database.watch(on_statement, self.db_commits.inc)

    def watch_transactions(self, database: Database) -> None:
        """Time every transaction of `database`."""
        read, write = self.db_seconds.labels("read"), self.db_seconds.labels("write")

        def on_transaction(kind: str, seconds: float) -> None:
            (write if kind == "write" else read).observe(seconds)

        database.on_transaction = on_transaction

    def watch_redis(self, queued: Callable[[], int]) -> Callable[[float], None]:
        """Read the writer's queue when scraped; returns what times its pipelines."""
        self.redis_queued.set_function(queued)
        observe: Callable[[float], None] = self.redis_seconds.observe
        return observe

    def stream_started(self, stream: Backlogged) -> None:
        """Count `stream` in the backlog gauges until `stream_ended`."""
        self._streams.add(stream)

    def stream_ended(self, stream: Backlogged) -> None:
        self._streams.discard(stream)

    def watch_checkpoints(self, last_success: Callable[[], float]) -> None:
        """The checkpoint lag, from the monotonic time of the last good tick."""
        self.checkpoint_lag.set_function(lambda: time.monotonic() - last_success())

    def model_label(self, model: str) -> str:
        """`model` as a label: the first `MAX_MODEL_LABELS` names, then `other`."""
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODEL_LABELS:
            return OTHER
        self._models.add(model)
        return model

    # -- llm.tracing.CallObserver ------------------------------------------------------

    def call_ended(self, call: CallSummary) -> None:
        model = self.model_label(f"{call.provider}/{call.model}")
        if call.error_type is not None:
            outcome = "error"
            self.provider_errors.labels(call.provider, _bounded(call.error_type)).inc()
        else:
            outcome = "cancelled" if call.cancelled else "ok"
        self.provider_calls.labels(call.provider, outcome).inc()
        if call.first_chunk is None or outcome == "error":  # a failure's times say little
            return
        self.model_ttft.labels(model).observe(call.first_chunk)
        streaming = call.duration - call.first_chunk
        if call.output_tokens and streaming > 0 and outcome == "ok":  # whole answers only
            self.model_rate.labels(model).observe(call.output_tokens / streaming)

    def retried(self, provider: str, error_type: str) -> None:
        self.provider_retries.labels(provider, _bounded(error_type)).inc()

    # -- HTTP (http.request_id) --------------------------------------------------------

    def count_request(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        method = scope["method"] if scope["method"] in _METHODS else OTHER
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:  # `labels()` takes a lock and builds keys: once per key
            children = self._http_children[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_seconds.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _route(scope: Scope) -> str:
    """The matched route's template, else `unmatched` (the page's files, 404s)."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _bounded(kind: str) -> str:
    """An error kind (an HTTP status or an error class's name) fit for a label."""
    return kind if (len(kind) <= 40 and kind.isidentifier()) or kind.isdigit() else OTHER
