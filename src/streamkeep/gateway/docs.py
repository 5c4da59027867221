"""The OpenAPI description of the gateway's routes, which parse their bodies by hand.

FastAPI documents a body it parses itself; the gateway parses its own (to answer in the
vendor's error shape), so each route states its body, its answers and its error shape
here, and `/docs` and the schemathesis run (`tests/server/test_fuzz.py`) see them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

#: OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`.
OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

#: Anthropic's error body, `{"type": "error", "error": {"type", "message"}}`.
ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


def inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """The schema with its `#/$defs/...` references replaced by what they name (the
    body is parsed by hand, so FastAPI does not register its models as components); a
    discriminator keeps its property, not its mapping onto them."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inlined(defs[ref.removeprefix("#/$defs/")], defs)
        if "propertyName" in schema and isinstance(schema.get("mapping"), dict):
            # A discriminator: its mapping names `$defs` entries, which are inlined away.
            return {"propertyName": schema["propertyName"]}
        return {k: inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [inlined(v, defs) for v in schema]
    return schema


def answers(
    ok: str,
    errors: Iterable[tuple[int | str, str]],
    *,
    error_schema: dict[str, Any] = OPENAI_ERROR,
    streams: bool = True,
) -> dict[str, Any]:
    """The `responses` of a route: 200 (`ok`, JSON or SSE when `streams`) and its errors."""
    content: dict[str, Any] = {"application/json": {}}
    if streams:
        content["text/event-stream"] = {}
    error = {"content": {"application/json": {"schema": error_schema}}}
    return {
        "200": {"description": ok, "content": content},
        **{str(status): {"description": text, **error} for status, text in errors},
    }


def body_doc(
    model: type[BaseModel],
    ok: str,
    errors: Iterable[tuple[int | str, str]],
    *,
    error_schema: dict[str, Any] = OPENAI_ERROR,
) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inlined(schema, schema.get("$defs", {}))}},
        },
        "responses": answers(ok, errors, error_schema=error_schema),
    }
