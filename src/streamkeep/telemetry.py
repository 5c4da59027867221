"""Export over OTLP: traces and metrics, when the standard `OTEL_*` variables ask for it.

`export_from_env()` returns None unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces' or
metrics' own `OTEL_EXPORTER_OTLP_*_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not
true; only then are the OpenTelemetry SDK and the OTLP/HTTP exporters imported (the
`otel` extra installs them). Everything else is the SDK's and the exporters' own
reading of the environment: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_METRIC_EXPORT_INTERVAL`...

The providers are the app's own (never set as OpenTelemetry's global ones: two apps in
one process keep apart); the app hands them to what it traces. The app's Prometheus
metrics go out too, as observable instruments read at each export (`bridge`): counters
and gauges as such, a histogram as Prometheus keeps one (cumulative `_bucket{le}`,
`_count` and `_sum` counters), besides the OpenTelemetry conventions' own histograms
(`gen_ai.client.*`, `http.server.request.duration`). `shutdown()` flushes both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import CollectorRegistry

__all__ = ["Export", "export_from_env", "wanted"]

_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for OTLP export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


@dataclass(slots=True)
class Export:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        """Send what is buffered, then stop (blocking: HTTP requests)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    def bridge(self, registry: CollectorRegistry) -> None:
        """Export the counters and gauges of a Prometheus `registry` too."""
        meter = self.meter_provider.get_meter("streamkeep.http.metrics")
        for family in registry.collect():
            if family.type == "counter":
                meter.create_observable_counter(
                    f"{family.name}_total",
                    [_reader(registry, family.name, "_total")],
                    description=family.documentation,
                )
            elif family.type == "gauge":
                meter.create_observable_gauge(
                    family.name,
                    [_reader(registry, family.name, "")],
                    description=family.documentation,
                )
            elif family.type == "histogram":
                # As Prometheus stores one: cumulative counters per bucket (`le`), count
                # and sum, so the same PromQL works on what the collector forwards.
                for suffix in ("_bucket", "_count", "_sum"):
                    meter.create_observable_counter(
                        family.name + suffix,
                        [_reader(registry, family.name, suffix)],
                        description=family.documentation,
                    )


def export_from_env(service_instance: str) -> Export | None:
    """The SDK's providers with OTLP/HTTP exporters, or None when export is not asked
    for (see the module docstring). `service_instance`: this worker's id."""
    if not wanted():
        return None
    # Imported here only: without export, none of this is loaded.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.instance.id": service_instance}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "streamkeep"
    resource = Resource.create(attributes)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    return Export(tracer_provider, meter_provider)


def _reader(registry: CollectorRegistry, name: str, suffix: str) -> Any:
    """A callback observing the samples `name + suffix` of `registry`'s family `name`."""
    from opentelemetry.metrics import CallbackOptions, Observation

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for family in registry.collect():
            if family.name == name:
                return [
                    Observation(sample.value, dict(sample.labels))
                    for sample in family.samples
                    if sample.name == name + suffix
                ]
        return []

    return observe
