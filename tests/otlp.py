"""A real OTLP/HTTP receiver on a loopback port, for the tests of what streamkeep exports.

The OpenTelemetry Collector cannot be installed here, so this stands in for it: an
HTTP server taking `POST /v1/traces` and `POST /v1/metrics` as the OTLP/HTTP protocol
says (binary protobuf, optionally gzip), decoding each body with the `opentelemetry-proto`
messages the exporters encode with. A body that does not decode is answered 400 and
kept as a failure, so a test sees it.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class Span:
    """One received span, its ids as hex (as a traceparent writes them)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    resource: dict[str, Any]


@dataclass
class Received:
    traces: list[ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[ExportMetricsServiceRequest] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def spans(self) -> list[Span]:
        out = []
        for request in list(self.traces):
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(
                            Span(
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                kind=s.kind,
                                attributes=attributes(s.attributes),
                                links=[(x.trace_id.hex(), x.span_id.hex()) for x in s.links],
                                resource=resource,
                            )
                        )
        return out

    def metric_names(self) -> set[str]:
        return {
            m.name
            for request in list(self.metrics)
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }

    def last_points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """The data points of sum or gauge metric `name` in the last export naming it."""
        for request in reversed(list(self.metrics)):
            found = [
                (attributes(p.attributes), p.as_double or p.as_int)
                for rm in request.resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name == name
                for p in getattr(m, m.WhichOneof("data")).data_points
            ]
            if found:
                return found
        return []


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class OtlpReceiver:
    """`with OtlpReceiver() as r:` serves on `r.endpoint` until the block ends."""

    def __init__(self) -> None:
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    if self.path == "/v1/traces":
                        received.traces.append(ExportTraceServiceRequest.FromString(body))
                        answer = ExportTraceServiceResponse().SerializeToString()
                    elif self.path == "/v1/metrics":
                        received.metrics.append(ExportMetricsServiceRequest.FromString(body))
                        answer = ExportMetricsServiceResponse().SerializeToString()
                    else:
                        self.send_error(404)
                        return
                except DecodeError as exc:
                    received.failures.append(f"{self.path}: {exc}")
                    self.send_error(400)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r
