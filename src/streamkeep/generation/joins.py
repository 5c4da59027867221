"""Which generation a reader or a retry joins, wherever it runs (`GenerationManager`'s).

A reader resumes the chat's generation of this process, else the one another worker
runs (`Peers`); a start with an `Idempotency-Key` joins the generation its key started,
here or on another worker, instead of asking the provider again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkeep.generation.generation import Generation
from streamkeep.store.errors import GenerationConflict, NotFound

if TYPE_CHECKING:
    from streamkeep.generation.peers import GenerationView, Peers
    from streamkeep.store import ChatStore


@dataclass(frozen=True, slots=True)
class Resumed:
    """A generation to read (`GenerationView`), after which event id."""

    generation: GenerationView
    after: int


class Joins:
    """`GenerationManager`'s readers and keyed retries."""

    _store: ChatStore
    _peers: Peers | None
    _by_id: dict[str, Generation]
    _by_chat: dict[str, Generation]

    def get(self, generation_id: str) -> Generation | None:
        return self._by_id.get(generation_id)

    async def find_remote(self, chat_id: str) -> GenerationView | None:
        """The chat's generation on another worker (running, or ended recently)."""
        return await self._peers.find(chat_id) if self._peers is not None else None

    async def find_generation(
        self, generation_id: str, chat_id: str, message_id: str
    ) -> GenerationView | None:
        """That generation, wherever it runs (or ran, within the replay window), to
        read its own frames (a gateway call's too: the caller named it); None once its
        frames are gone."""
        local = self._by_id.get(generation_id)
        if local is not None:
            return local
        if self._peers is None:
            return None
        return await self._peers.find(chat_id, generation=(generation_id, message_id))

    async def resume(self, chat_id: str, after: int, *, replay_finished: bool) -> Resumed | None:
        """The chat's generation for a reader that has its events up to `after`: this
        process's, else one another worker runs (or ran, within the replay window).

        Event ids count on across a chat's generations, so an `after` below the
        generation's first id is one of an earlier generation: the reader gets this
        one from its start. None when there is nothing to send: no generation, a
        gateway call (its client has the stream), one that ended with nothing after
        `after`, or one of this process that ended while the reader did not ask for a
        replay (`replay_finished`: a page that loads without naming where it stopped
        has the stored message already). An unknown chat raises NotFound, and so does
        a deleted one whose reply ended (deleting stops it first)."""
        local = self._by_chat.get(chat_id)
        gen: GenerationView | None = local
        if local is None:
            gen = await self.find_remote(chat_id)
        elif not local.resumable:
            gen = None
        if gen is None:
            await self._store.get_chat(chat_id)  # 404 for an unknown chat
            return None
        after = max(after, (gen.first_seq or 1) - 1)
        if not gen.done.is_set():
            return Resumed(gen, after)
        await self._store.get_chat(chat_id)  # deleted since it ended: its stream is gone
        if after >= gen.log.next_seq - 1 or (local is not None and not replay_finished):
            return None
        return Resumed(gen, after)

    async def join_or_start(
        self,
        start: Callable[[], Awaitable[Generation]],
        *,
        idempotency_key: str | None,
        chat_id: str | None = None,
        message_id: str | None = None,
    ) -> GenerationView:
        """`start()`'s generation (a `Generation`), or the one another worker runs that
        this keyed start is a retry of.

        The chat is `chat_id`, else `message_id`'s (regenerate, edit). With peers, a
        keyed start first asks the database whether its key already runs elsewhere:
        such a retry joins that generation without `start()` asking the provider for
        an answer that would only be thrown away. A start refused because its key
        started a generation on another worker meanwhile joins that one too, and a
        retry of a generation this process runs joins it without `start()` as well
        (which would take a slot of the caller's limits for it: `http.quotas`)."""
        if idempotency_key is not None:
            local = await self._keyed_here(idempotency_key, chat_id, message_id)
            if local is not None:
                return local
        if idempotency_key is not None and self._peers is not None:
            remote = await self._keyed_elsewhere(idempotency_key, chat_id, message_id)
            if remote is not None:
                return remote
        try:
            return await start()
        except GenerationConflict as conflict:
            remote = await self._remote_join(conflict, chat_id)
            if remote is None:
                raise
            return remote

    async def _keyed_here(
        self, key: str, chat_id: str | None, message_id: str | None
    ) -> Generation | None:
        """The running generation this process started with this key in the chat (by
        `chat_id`, else `message_id`'s), if any. No read unless one here has the key."""
        if chat_id is None:
            if message_id is None or not any(
                gen.ids.idempotency_key == key for gen in self._by_chat.values()
            ):
                return None
            try:
                chat_id = (await self._store.get_message(message_id)).chat_id
            except NotFound:
                return None  # `start()` answers 404
        gen = self._by_chat.get(chat_id)
        if gen is None or gen.done.is_set() or gen.ids.idempotency_key != key:
            return None
        return gen

    async def _keyed_elsewhere(
        self, key: str, chat_id: str | None, message_id: str | None
    ) -> GenerationView | None:
        """The running generation another worker started with this key, if any."""
        try:
            if chat_id is None:
                if message_id is None:
                    return None
                chat_id = (await self._store.get_message(message_id)).chat_id
            conflict = await self._store.find_conflict(chat_id, key)
        except NotFound:
            return None  # `start()` answers 404
        if conflict is None or self.get(conflict.generation_id) is not None:
            return None  # nothing to join, or this process has it: `start()` joins it
        return await self._remote_join(conflict, chat_id)

    async def _remote_join(
        self, conflict: GenerationConflict, chat_id: str | None
    ) -> GenerationView | None:
        """The other worker's generation a same-key retry joins: the running one the
        conflict names. None without peers, or for any other conflict."""
        if not (conflict.same_key and conflict.running) or self._peers is None:
            return None
        if chat_id is None:
            try:
                chat_id = (await self._store.get_generation(conflict.generation_id)).chat_id
            except NotFound:
                return None  # its chat was deleted meanwhile
        generation = (conflict.generation_id, conflict.message_id)
        return await self._peers.find(chat_id, generation=generation)
