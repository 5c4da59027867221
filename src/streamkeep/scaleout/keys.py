"""The names streamkeep gives its Redis keys and channels, in one place.

Every name starts with a prefix (default `streamkeep:`) so that several deployments, or
several tests, can share one Redis database without touching each other's keys.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "streamkeep:"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def generation(self, generation_id: str) -> str:
        """The Redis Stream of one generation's frames."""
        return f"{self.prefix}gen:{generation_id}"

    def chat(self, chat_id: str) -> str:
        """Which generation (and assistant message) a chat's latest stream belongs to."""
        return f"{self.prefix}chat:{chat_id}"

    def worker(self, worker_id: str) -> str:
        """Present (with a TTL) while the worker is alive."""
        return f"{self.prefix}worker:{worker_id}"

    @property
    def workers(self) -> str:
        """The set of worker ids that have registered (alive or not: see `liveness`)."""
        return f"{self.prefix}workers"

    @property
    def epoch(self) -> str:
        """Set once by a writer of an empty Redis: a change means Redis lost its data."""
        return f"{self.prefix}epoch"

    @property
    def control(self) -> str:
        """The pub/sub channel of stop requests and their acknowledgements."""
        return f"{self.prefix}control"
