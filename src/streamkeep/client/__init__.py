"""A small HTTP client for a running streamkeep server (used by `streamkeep chat`)."""

from streamkeep.client.api import ApiError, Chunk, ServerUnreachable, StreamkeepClient

__all__ = ["ApiError", "Chunk", "ServerUnreachable", "StreamkeepClient"]
