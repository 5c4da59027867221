"""Log lines: plain text (uvicorn's look) or one JSON object per line.

The ids a line is about ride in context variables, set where they become known: the
request id by `http.request_id` for each HTTP request, the generation and chat ids by
the generation's task (which copies the request's context when it starts, and keeps
them for its whole life, apart from the request). The trace id is read from the
current OpenTelemetry span (the API only: without an SDK, there is none).

A JSON line carries `time`, `level`, `logger`, `message`, the ids that are known
(`request_id`, `generation_id`, `chat_id`, `trace_id`, `span_id`) and `exception` when
one is logged. streamkeep never logs message content; the lines of other libraries are
written as they come.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from opentelemetry import trace

__all__ = [
    "CHAT_ID",
    "GENERATION_ID",
    "REQUEST_ID",
    "JsonFormatter",
    "LogFormat",
    "uvicorn_log_config",
]

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("streamkeep_request_id", default=None)
GENERATION_ID: ContextVar[str | None] = ContextVar("streamkeep_generation_id", default=None)
CHAT_ID: ContextVar[str | None] = ContextVar("streamkeep_chat_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the ids of the context it was logged in."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (
            ("request_id", REQUEST_ID),
            ("generation_id", GENERATION_ID),
            ("chat_id", CHAT_ID),
        ):
            value = var.get()
            if value is not None:
                line[key] = value
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def uvicorn_log_config(log_format: LogFormat, level: str = "info") -> dict[str, Any] | None:
    """uvicorn's `log_config` for `log_format`: None keeps uvicorn's own (text); json
    sends uvicorn's lines, its access log and streamkeep's own to stderr as JSON."""
    if log_format == "text":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "streamkeep": {"handlers": ["json"], "level": level.upper(), "propagate": False},
        },
    }
