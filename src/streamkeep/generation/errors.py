"""Errors of the generation engine (the store's NotFound / GenerationConflict /
InvalidOperation and the llm's UnknownModelError pass through unchanged)."""

from __future__ import annotations


class GenerationError(Exception):
    """Base of the generation engine's own errors."""

    kind: str = "generation_error"


class ShuttingDown(GenerationError):
    """The server is shutting down and takes no new generations (HTTP 503)."""

    kind = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the server is shutting down; try again shortly")
