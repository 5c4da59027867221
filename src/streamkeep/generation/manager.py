"""The registry of this process's generations: start, join, stop, recover, shut down.

Starting a reply writes the user message, the assistant message (status `streaming`)
and a running generation in one transaction, then hands the stream to a `Generation`
task owned here, not by the HTTP request. The database allows one running generation
per chat; a retry with the same idempotency key joins the one already running.

A reply's stream events are numbered after its chat's `event_seq` as read when the
reply starts (one generation runs per chat, and the rows' write checks that no other
took those ids meanwhile), so ids never repeat across a chat's generations and a
Last-Event-ID always names one frame of one of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Awaitable, Iterator
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from opentelemetry import trace

from streamkeep.generation.checkpointer import Checkpointer
from streamkeep.generation.errors import ShuttingDown
from streamkeep.generation.generation import (
    EVENT_SEQ_MARGIN,
    FrameEncoder,
    Generation,
    GenerationIds,
)
from streamkeep.generation.joins import Joins
from streamkeep.generation.log import EventLog, InProcessEventLog
from streamkeep.generation.parts import as_json
from streamkeep.generation.plan import Continued, ReplyPlan, ToolUse
from streamkeep.generation.requests import ReplyRequests
from streamkeep.generation.steps import ReplyStream
from streamkeep.generation.sweeper import OrphanSweeper
from streamkeep.generation.toolloop import tool_loop
from streamkeep.generation.tracing import SCOPE, db_span, start_span, traceparent
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import EventStream, StreamError, StreamEvent
from streamkeep.llm.types import ChatRequest
from streamkeep.llm.usage import prompt_chars
from streamkeep.store import ids as store_ids
from streamkeep.store.errors import EventSeqMoved, GenerationConflict
from streamkeep.tools import Toolbox

if TYPE_CHECKING:
    from streamkeep.config import Settings
    from streamkeep.generation.peers import Peers
    from streamkeep.llm.registry import ModelRegistry
    from streamkeep.store import ChatStore

logger = logging.getLogger(__name__)


# Starts of a reply whose event ids another generation of the chat took meanwhile (it
# started and ended between our read of the chat and our write): tried again after it.
START_ATTEMPTS = 5
NO_TOOLS = ToolUse()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class GenerationManager(Joins, ReplyRequests):
    def __init__(
        self,
        store: ChatStore,
        registry: ModelRegistry,
        settings: Settings,
        *,
        worker_id: str | None = None,
        cluster: Peers | None = None,
        toolbox: Toolbox | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        """`cluster`: the other workers (with Redis: logs they can read, stops from
        them, liveness); None when this process is alone. `toolbox`: the tools replies
        may call. `tracer_provider`: where generations' spans go (None: OpenTelemetry's
        global one)."""
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self._store = store
        self.toolbox = toolbox if toolbox is not None else Toolbox()
        self._peers = cluster
        self._registry = registry
        self._settings = settings
        self.worker_id = worker_id or default_worker_id()
        self._by_id: dict[str, Generation] = {}
        self._by_chat: dict[str, Generation] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        # (chat_id, idempotency key) -> the start in flight in this process: a same-key
        # request arriving meanwhile awaits it instead of racing it at the database.
        self._starting: dict[tuple[str, str], asyncio.Future[Generation]] = {}
        self._sweeper: OrphanSweeper | None = None
        self._accepting = False
        self.checkpointer = Checkpointer(
            store,
            self._running,
            interval=settings.checkpoint_interval,
            worker_id=self.worker_id,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Mark what dead processes left `streaming` as `interrupted`, then serve.

        A generation is an orphan only once its heartbeat is `worker_stale_after` old
        (with peers, also once its worker is gone): see `sweeper` and
        `scaleout.liveness`.
        """
        if self._peers is not None:  # only the work of workers not alive in Redis
            orphans = await self._peers.start(
                local_stop=self.stop_local, local_generation_ids=self._running_ids
            )
        else:
            settings = self._settings
            self._sweeper = OrphanSweeper(
                self._store,
                self._running_ids,
                stale_after=settings.worker_stale_after,
                period=max(settings.worker_stale_after / 3, settings.checkpoint_interval),
            )
            orphans = await self._sweeper.start()
        if orphans:
            logger.warning("marked %d orphaned generation(s) interrupted", len(orphans))
        self.checkpointer.start()
        self._accepting = True

    async def shutdown(self) -> None:
        """Take no new generations; give live ones the grace period, then interrupt them."""
        self._accepting = False
        running = list(self._running())
        if running:
            waits = [asyncio.create_task(g.wait()) for g in running]
            _, pending = await asyncio.wait(waits, timeout=self._settings.shutdown_grace)
            for task in pending:
                task.cancel()
            for gen in running:
                if not gen.done.is_set():
                    logger.warning("interrupting generation %s at shutdown", gen.id)
                    gen.interrupt()
            await asyncio.gather(*(g.wait() for g in running))
        if self._sweeper is not None:
            await self._sweeper.aclose()
        await self.checkpointer.stop()
        if self._peers is not None:  # after the last frames and stops of our own
            await self._peers.aclose()
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()

    # -- lookups -------------------------------------------------------------------------

    def live(self, chat_id: str) -> Generation | None:
        """The chat's generation: running, or finished within the retention period."""
        return self._by_chat.get(chat_id)

    def _running(self) -> Iterator[Generation]:
        return (g for g in list(self._by_id.values()) if not g.done.is_set())

    def _running_ids(self) -> list[str]:
        return [g.id for g in self._running()]

    async def stop(self, chat_id: str) -> bool:
        """Stop the chat's running generation, on whichever worker runs it.

        True only when this call stopped it (its reply is stored `stopped` because of
        it); False when the chat has none, or it ended (or was stopped) first.
        """
        gen = self._by_chat.get(chat_id)
        if gen is not None and not gen.done.is_set():
            return await gen.stop()  # ours: no other worker can be running this chat
        return self._peers is not None and await self._peers.stop(chat_id)

    async def traceparent(self, chat_id: str) -> str | None:
        """The traceparent of the chat's latest generation, wherever it runs (None when
        untraced or unknown): a stop links its span to it."""
        gen = self._by_chat.get(chat_id)
        if gen is not None:
            return gen.traceparent
        return await self._peers.traceparent(chat_id) if self._peers is not None else None

    async def stop_local(self, chat_id: str) -> bool:
        """Stop the chat's generation if this process runs it."""
        gen = self._by_chat.get(chat_id)
        if gen is None or gen.done.is_set():
            return False
        return await gen.stop()

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDown

    async def _begin(self, plan: ReplyPlan) -> Generation:
        """Start `plan`; a same-key start already in flight here is awaited instead."""
        if plan.idempotency_key is None:
            return await self._insert(plan)
        key = (plan.chat_id, plan.idempotency_key)
        in_flight = self._starting.get(key)
        if in_flight is not None:
            return await asyncio.shield(in_flight)
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._starting[key] = future
        try:
            gen = await self._insert(plan)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters (if any) get it raised too
            raise
        finally:
            del self._starting[key]
        future.set_result(gen)
        return gen

    async def _insert(self, plan: ReplyPlan, attempts: int = START_ATTEMPTS) -> Generation:
        """Ask the provider, then write the rows while its answer is on the way.

        The write runs during the provider's time to first token, so storing does not
        delay the first token. If the write fails (a generation of another process, a
        deleted chat, the database away), the provider's stream is closed at once and
        nothing is stored.

        The frames are numbered from `plan.event_seq + 1` before the write, which
        checks that the chat's event ids did not move meanwhile (another generation
        started and ended since the chat was read); if they did, this starts again
        after them.
        """
        # Checked again here, with no await before the launch registers the generation:
        # a start that began before `shutdown()` and got this far after it is refused
        # instead of running unseen by the shutdown.
        self._check_accepting()
        running = self._by_chat.get(plan.chat_id)
        if running is not None and not running.done.is_set():
            return await self._meet_running(running, plan)
        continued = plan.continued
        ids = GenerationIds(
            id=store_ids.generation_id(),
            chat_id=plan.chat_id,
            message_id=continued.message_id if continued else store_ids.message_id(),
            user_message_id=store_ids.message_id() if plan.user_content is not None else None,
            model=plan.model,
            idempotency_key=plan.idempotency_key,
        )
        first_seq, reserve = plan.event_seq + 1, plan.event_seq + EVENT_SEQ_MARGIN
        rows: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request = ChatRequest(model=plan.model, messages=plan.prompt)
        gen = self._launch(
            ids,
            request,
            ready=rows,
            first_seq=first_seq,
            seq_reserved=reserve,
            announce=False,
            tools=plan.tools,
            continued=continued,
        )
        try:
            await asyncio.sleep(0)  # the generation's task sends the request first
            with db_span(self._tracer, gen.span, "start reply"):
                if continued is not None:
                    await self._store.continue_reply(
                        chat_id=plan.chat_id,
                        message_id=continued.message_id,
                        parts=as_json(continued.parts),
                        idempotency_key=plan.idempotency_key,
                        worker_id=self.worker_id,
                        generation_id=ids.id,
                        first_seq=first_seq,
                        reserve_seq=reserve,
                        api_key_id=plan.api_key_id,
                    )
                else:
                    await self._start_rows(plan, ids, first_seq, reserve)
        except BaseException as exc:
            rows.set_exception(exc)
            rows.exception()  # retrieved: the generation only checks that it failed
            await self._discard(gen)
            if isinstance(exc, GenerationConflict):
                joined = await self._join(exc)
                if joined is not None:
                    return joined
            if isinstance(exc, EventSeqMoved) and attempts > 1:
                logger.info(
                    "chat %s: event ids moved to %d, starting again", plan.chat_id, exc.event_seq
                )
                return await self._insert(replace(plan, event_seq=exc.event_seq), attempts - 1)
            raise
        rows.set_result(None)
        if self._peers is not None:  # now other workers may find it
            self._peers.announce(
                ids.id,
                ids.chat_id,
                ids.message_id,
                first_seq=first_seq,
                traceparent=gen.traceparent,
            )
        return gen

    async def _start_rows(
        self, plan: ReplyPlan, ids: GenerationIds, first_seq: int, reserve: int
    ) -> None:
        await self._store.start_reply(
            chat_id=plan.chat_id,
            parent_id=plan.parent_id,
            user_content=plan.user_content,
            user_files=plan.user_files,
            model=plan.model,
            idempotency_key=plan.idempotency_key,
            worker_id=self.worker_id,
            message_id=ids.message_id,
            generation_id=ids.id,
            user_message_id=ids.user_message_id,
            first_seq=first_seq,
            reserve_seq=reserve,
            title=plan.title,
            api_key_id=plan.api_key_id,
        )

    async def _meet_running(self, running: Generation, plan: ReplyPlan) -> Generation:
        """A start for a chat this process is running a generation of, known here
        without the database and before the provider is asked: a same-key retry joins
        it (or the reply its key produced); anything else is a conflict."""
        key = plan.idempotency_key
        if key is not None:
            if running.ids.idempotency_key == key:
                return running
            # A retry whose key already produced a reply is answered with that
            # one, not refused for the running one (rare: one read, no provider).
            keyed = await self._store.find_conflict(plan.chat_id, key)
            if keyed is not None and keyed.same_key:
                joined = await self._join(keyed)
                if joined is not None:
                    return joined
                raise keyed
        raise GenerationConflict(
            generation_id=running.id, message_id=running.message_id, same_key=False
        )

    async def _discard(self, gen: Generation) -> None:
        await gen.discard()
        if self._by_id.get(gen.id) is gen:
            del self._by_id[gen.id]
        if self._by_chat.get(gen.chat_id) is gen:
            del self._by_chat[gen.chat_id]

    async def _join(self, conflict: GenerationConflict) -> Generation | None:
        """The generation a same-key retry joins, when this process still has it
        (running, or finished within the retention period: its stream is replayed).

        Otherwise the conflict is raised: with `same_key` and `running` False it names
        the finished reply (`message_id`) the retry's key produced, for the client to
        fetch (the API answers 409 `generation_conflict` with that `message_id`)."""
        if not conflict.same_key:
            return None
        return self._by_id.get(conflict.generation_id)

    def launch_prepared(
        self,
        ids: GenerationIds,
        request: ChatRequest,
        stream: EventStream,
        *,
        encoder: FrameEncoder,
        ready: Awaitable[object] | None = None,
        detached: bool = False,
    ) -> Generation:
        """Run a generation whose rows the caller writes (the OpenAI gateway: `ready`
        is that write, possibly still running) on a stream it opened, with its encoder.
        A `detached` one (a background response) runs on when its readers leave, even
        with `stop_on_disconnect`."""
        self._check_accepting()
        return self._launch(
            ids, request, stream=stream, encoder=encoder, ready=ready, detached=detached
        )

    def _launch(
        self,
        ids: GenerationIds,
        request: ChatRequest,
        *,
        stream: EventStream | None = None,
        encoder: FrameEncoder | None = None,
        ready: Awaitable[object] | None = None,
        first_seq: int = 1,
        seq_reserved: int | None = None,
        announce: bool = True,
        tools: ToolUse = NO_TOOLS,
        continued: Continued | None = None,
        detached: bool = False,
    ) -> Generation:
        span = start_span(self._tracer, ids.id, ids.chat_id, ids.message_id, ids.model)
        gen = Generation(
            ids,
            span=span,
            tracer=self._tracer,
            store=self._store,
            checkpointer=self.checkpointer,
            stop_on_disconnect=self._settings.stop_on_disconnect and not detached,
            on_done=self._finished,
            encoder=encoder,
            # Only UI-stream generations are resumable through the chat API: the
            # gateway's OpenAI chunks belong to the client that asked for them.
            log=self._new_log(
                ids,
                resumable=encoder is None,
                first_seq=first_seq,
                announce=announce,
                traceparent=traceparent(span),
            ),
            ready=ready,
            first_seq=first_seq,
            seq_reserved=seq_reserved,
            steps=bool(tools) or continued is not None,
            continued=continued,
        )
        metadata = {
            "chatId": ids.chat_id,
            "generationId": ids.id,
            "userMessageId": ids.user_message_id,
            "model": ids.model,
            "status": "streaming",
        }
        relayed: ReplyStream
        try:
            if stream is not None:
                relayed = stream
            elif tools or continued is not None:
                relayed = self._tool_loop(ids.model, request, tools, continued)
            else:
                relayed = self._registry.stream(ids.model, request)
        except LLMError as exc:  # the rows exist now: the reply must end, as an error
            relayed = _failed(exc)
        self._by_id[ids.id] = gen
        self._by_chat[ids.chat_id] = gen
        gen.start(relayed, metadata, prompt_chars=prompt_chars(request))
        return gen

    def _tool_loop(
        self, model: str, request: ChatRequest, tools: ToolUse, continued: Continued | None
    ) -> ReplyStream:
        config = self._settings.tools
        return tool_loop(
            partial(self._registry.stream, model),
            request,
            tools.tools,
            max_steps=config.max_steps,
            tool_timeout=config.timeout,
            client_tools=tools.client,
            prefix=continued.parts if continued is not None else (),
            tracer=self._tracer,
        )

    def _new_log(
        self,
        ids: GenerationIds,
        *,
        resumable: bool,
        first_seq: int,
        announce: bool,
        traceparent: str | None,
    ) -> EventLog:
        if self._peers is None:
            return InProcessEventLog(first_seq)
        return self._peers.new_log(
            ids.id,
            ids.chat_id,
            ids.message_id,
            resumable=resumable,
            first_seq=first_seq,
            announce=announce,
            traceparent=traceparent,
        )

    def _finished(self, gen: Generation) -> None:
        loop = asyncio.get_running_loop()
        retention = self._settings.replay_window
        self._expiry[gen.id] = loop.call_later(retention, self._forget, gen)

    def _forget(self, gen: Generation) -> None:
        handle = self._expiry.pop(gen.id, None)
        if handle is not None:
            handle.cancel()
        if self._by_id.get(gen.id) is gen:
            del self._by_id[gen.id]
        if self._by_chat.get(gen.chat_id) is gen:
            del self._by_chat[gen.chat_id]


async def _failed(error: LLMError) -> AsyncGenerator[StreamEvent, None]:
    """A stream that fails at once, for a model that could not even be opened."""
    yield StreamError(error)
