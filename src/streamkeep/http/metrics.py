"""Prometheus metrics of one app, in its own CollectorRegistry (no global registry:
two apps in one process, as in tests, never share or clash).

Counting stays off the token path: relayed chunks are counted per write (a C-level
`bytes.count` over the frames of one wake-up), database writes by a SQLAlchemy cursor
hook once per statement, generation outcomes once per generation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from streamkeep.generation import Generation
    from streamkeep.store import Database

_WRITE_VERBS = ("insert", "update", "delete")
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
            "Generations finished, by the status their message ended with",
            ["status"],
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
            self.generations_finished.labels(generation.status).inc()
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
