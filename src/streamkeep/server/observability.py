"""The app's telemetry: OTLP export when the environment asks for it (`telemetry`),
the HTTP request spans of OpenTelemetry's FastAPI instrumentation, and the metrics'
hooks into the parts the lifespan opens.

Without `OTEL_EXPORTER_OTLP_ENDPOINT` nothing here imports the SDK, the exporters or
the instrumentation, and nothing is added to the request path.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from streamkeep.config import SettingsError
from streamkeep.generation import GenerationManager
from streamkeep.http.metrics import Metrics
from streamkeep.scaleout import Cluster
from streamkeep.store import Database
from streamkeep.telemetry import Export, export_from_env

logger = logging.getLogger(__name__)

# Probes and scrapes: many a minute, nothing an operator traces.
_NOT_TRACED = "/metrics,/healthz,/readyz"


def install(app: FastAPI, metrics: Metrics, worker_id: str) -> Export | None:
    """Start exporting, when asked for: the request spans and the metrics.

    Raises SettingsError when export is asked for but the `otel` extra is missing."""
    try:
        export = export_from_env(worker_id)
        if export is None:
            return None
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set, but OTLP export needs the `otel` extra "
            f"(pip install 'streamkeep[otel]'): {exc}"
        ) from None

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=export.tracer_provider,
        meter_provider=export.meter_provider,
        excluded_urls=_NOT_TRACED,
        # A span per body message would be one per streamed chunk.
        exclude_spans=["receive", "send"],
    )
    export.bridge(metrics.registry)
    return export


def watch(
    metrics: Metrics, database: Database, manager: GenerationManager, cluster: Cluster | None
) -> None:
    """Hook the metrics into the parts that time themselves."""
    metrics.watch_transactions(database)
    checkpointer = manager.checkpointer
    metrics.watch_checkpoints(lambda: checkpointer.last_success)
    if cluster is not None:
        writer = cluster.writer
        writer.on_flush = metrics.watch_redis(lambda: writer.queued)


async def shutdown(export: Export | None) -> None:
    """Flush and stop the export (its HTTP requests block: in a thread)."""
    if export is None:
        return
    try:
        await asyncio.to_thread(export.shutdown)
    except Exception as exc:  # a collector that is away must not fail the shutdown
        logger.warning("flushing telemetry at shutdown failed: %s", exc)
