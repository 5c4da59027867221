"""streamkeep: stream an LLM's answer token by token and keep every message."""

__version__ = "0.1.0"
