"""A generation's span, and how other workers link to it.

A generation outlives the request that starts it, so its span is not the request's:
it is started by the manager as the request's child (the request's context is the
current one then), made current in the generation's own task (so the provider call's
span and the database's nest under it), and ended with the generation, whenever that
is. Its W3C `traceparent` goes into the generation's Redis pointer; a resume or stop on
another worker links its own span to it (`link`).

Only the OpenTelemetry API is used: without an SDK, the span is a no-op and has no
traceparent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["SCOPE", "db_span", "end_span", "link", "link_current", "start_span", "traceparent"]

SCOPE = "streamkeep.generation"
_PROPAGATOR = TraceContextTextMapPropagator()


def start_span(
    tracer: trace.Tracer, generation_id: str, chat_id: str, message_id: str, model: str
) -> Span:
    """The span of a generation starting now, a child of the current span."""
    return tracer.start_span(
        "generation",
        kind=SpanKind.INTERNAL,
        attributes={
            "streamkeep.generation.id": generation_id,
            "streamkeep.chat.id": chat_id,
            "streamkeep.message.id": message_id,
            "gen_ai.request.model": model,
        },
    )


def end_span(span: Span, status: str, steps: int, error: str | None) -> None:
    if not span.is_recording():
        return
    span.set_attribute("streamkeep.generation.status", status)
    span.set_attribute("streamkeep.generation.steps", steps)
    if status == "error":
        span.set_status(Status(StatusCode.ERROR, error or "error"))
    span.end()


def traceparent(span: Span) -> str | None:
    """The span's W3C traceparent, or None for a no-op span."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def link(value: str | None) -> Link | None:
    """A link to the span a traceparent names; None when absent or malformed."""
    if not value:
        return None
    context = _PROPAGATOR.extract({"traceparent": value})
    span_context = trace.get_current_span(context).get_span_context()
    return Link(span_context) if span_context.is_valid else None


def link_current(value: str | None, why: str) -> None:
    """Link the current span (a resume's or stop's request) to the generation's span
    that `value` (its traceparent) names; `why`: `resume` or `stop`."""
    found = link(value)
    if found is not None:
        trace.get_current_span().add_link(found.context, {"streamkeep.link": why})


@contextlib.contextmanager
def db_span(tracer: trace.Tracer | None, parent: Span, operation: str) -> Iterator[None]:
    """A span for the generation's own database work (`operation`: its rows' first
    write, its final write), under `parent` (the generation's span) whichever task it
    runs in; nothing when the generation is not traced."""
    if tracer is None or not parent.is_recording():
        yield
        return
    with tracer.start_as_current_span(
        f"db {operation}",
        context=trace.set_span_in_context(parent),
        kind=SpanKind.CLIENT,
        attributes={"db.operation.name": operation},
    ):
        yield
