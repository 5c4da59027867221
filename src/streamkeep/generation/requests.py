"""The requests that start a reply: a message, a regeneration, an edit, tool results.

Each reads what it answers and which tools the reply may call, and hands one
`ReplyPlan` to `GenerationManager._begin`, which starts every plan the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streamkeep.generation.generation import Generation
from streamkeep.generation.plan import Continued, ReplyPlan, ToolUse, plan_reply, prompt_before
from streamkeep.generation.steps import ToolOutput, answer_calls
from streamkeep.llm.types import ToolSpec, Usage
from streamkeep.store.errors import GenerationConflict, InvalidOperation
from streamkeep.store.images import Image
from streamkeep.tools import Toolbox

if TYPE_CHECKING:
    from streamkeep.config import Settings
    from streamkeep.llm.registry import ModelRegistry
    from streamkeep.store import ChatRecord, ChatStore

logger = logging.getLogger(__name__)


class ReplyRequests:
    """`GenerationManager`'s reply-starting requests."""

    _store: ChatStore
    _registry: ModelRegistry
    _settings: Settings
    toolbox: Toolbox

    if TYPE_CHECKING:

        def _check_accepting(self) -> None: ...

        async def _begin(self, plan: ReplyPlan) -> Generation: ...

        async def _join(self, conflict: GenerationConflict) -> Generation | None: ...

    async def reply(
        self,
        *,
        chat_id: str,
        content: str,
        parent_id: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        api_key_id: str | None = None,
        tools: Sequence[str] | None = None,
        client_tools: Sequence[ToolSpec] = (),
        images: Sequence[Image] = (),
        images_owner: str | None = None,
    ) -> Generation:
        """A new user message under `parent_id` (default: the active leaf) and its reply.
        `api_key_id` (here, in `regenerate` and `edit`): the key the request came with,
        kept on the reply. `tools`: the names of the tools this reply may call (None:
        the chat's); `client_tools`: tools the client runs (see `continue_reply`).
        `images` (checked) go with the message; they are stored, with `images_owner`
        (None: auth is off) as their owner, once the plan holds (the model takes them)."""
        self._check_accepting()
        chat = await self._store.get_chat(chat_id)
        if parent_id is None:
            parent_id = chat.active_leaf_id
        use = self.tool_use(chat.tools, tools, client_tools)
        return await self._start(
            chat,
            parent_id,
            content,
            model,
            idempotency_key,
            api_key_id,
            use,
            images=images,
            images_owner=images_owner,
        )

    async def regenerate(
        self,
        message_id: str,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        api_key_id: str | None = None,
        tools: Sequence[str] | None = None,
        client_tools: Sequence[ToolSpec] = (),
    ) -> Generation:
        """A new answer: a sibling of an assistant message, or a reply under a user one."""
        self._check_accepting()
        message = await self._store.get_message(message_id)
        if message.role == "assistant":
            parent_id = message.parent_id
        elif message.role == "user":
            parent_id = message.id
        else:
            raise InvalidOperation(f"cannot regenerate a {message.role} message")
        chat = await self._store.get_chat(message.chat_id)
        use = self.tool_use(chat.tools, tools, client_tools)
        return await self._start(chat, parent_id, None, model, idempotency_key, api_key_id, use)

    async def edit(
        self,
        message_id: str,
        content: str,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        api_key_id: str | None = None,
        tools: Sequence[str] | None = None,
        client_tools: Sequence[ToolSpec] = (),
    ) -> Generation:
        """A sibling of a user message with new content (and its images), and its reply."""
        self._check_accepting()
        message = await self._store.get_message(message_id)
        if message.role != "user":
            raise InvalidOperation(f"only user messages can be edited, not {message.role}")
        chat = await self._store.get_chat(message.chat_id)
        use = self.tool_use(chat.tools, tools, client_tools)
        return await self._start(
            chat,
            message.parent_id,
            content,
            model,
            idempotency_key,
            api_key_id,
            use,
            files=message.parts,
        )

    async def continue_reply(
        self,
        message_id: str,
        results: Sequence[ToolOutput],
        *,
        tools: Sequence[str] | None = None,
        client_tools: Sequence[ToolSpec] = (),
        idempotency_key: str | None = None,
        api_key_id: str | None = None,
    ) -> Generation:
        """Go on with a reply that ended waiting for calls its client runs: `results`
        answer them (every one), and the model is called again in the same message.

        The message must be the last of its chat's active branch, and have ended
        `complete` with finish reason `tool-calls`; InvalidOperation otherwise."""
        self._check_accepting()
        message = await self._store.get_message(message_id)
        chat = await self._store.get_chat(message.chat_id)
        # A running reply in the chat (this one continued already, say) is a conflict,
        # and a retry of a continuation that ran joins it or is told its reply.
        conflict = await self._store.find_conflict(chat.id, idempotency_key)
        if conflict is not None:
            joined = await self._join(conflict)
            if joined is not None:
                return joined
            raise conflict
        if message.role != "assistant":
            raise InvalidOperation(f"only an assistant reply can be continued, not {message.role}")
        if chat.active_leaf_id != message.id:
            raise InvalidOperation("only the last message of the active branch can be continued")
        if message.status != "complete" or message.finish_reason != "tool-calls":
            raise InvalidOperation("the reply is not waiting for tool results")
        parts = answer_calls(message.parts, results)  # InvalidOperation for a bad result
        model = message.model or chat.model
        self._registry.resolve(model)
        plan = ReplyPlan(
            chat_id=chat.id,
            parent_id=message.parent_id,
            user_content=None,
            model=model,
            prompt=await prompt_before(self._store, chat, message.parent_id),
            event_seq=chat.event_seq,
            idempotency_key=idempotency_key,
            api_key_id=api_key_id,
            tools=self.tool_use(chat.tools, tools, client_tools),
            continued=Continued(message.id, parts, _usage(message.usage)),
        )
        return await self._begin(plan)

    def tool_use(
        self,
        chat_tools: Sequence[str],
        names: Sequence[str] | None,
        client_tools: Sequence[ToolSpec],
    ) -> ToolUse:
        """The tools of a reply: `names` if given (UnknownTools names any the toolbox
        lacks), else the chat's (those gone meanwhile, e.g. of an MCP server that is
        down, are left out); and the client's."""
        if names is not None:
            tools = self.toolbox.resolve(names)
        else:
            tools = [t for name in chat_tools if (t := self.toolbox.get(name)) is not None]
            if len(tools) < len(chat_tools):
                missing = sorted(set(chat_tools) - {t.name for t in tools})
                logger.warning("tools not available now, left out of the reply: %s", missing)
        return ToolUse(tuple(tools), tuple(client_tools))

    async def _start(
        self,
        chat: ChatRecord,
        parent_id: str | None,
        user_content: str | None,
        model: str | None,
        idempotency_key: str | None,
        api_key_id: str | None,
        tools: ToolUse,
        *,
        images: Sequence[Image] = (),
        images_owner: str | None = None,
        files: Sequence[dict[str, Any]] = (),
    ) -> Generation:
        plan = await plan_reply(
            self._store,
            self._registry,
            chat,
            parent_id,
            user_content,
            model=model,
            idempotency_key=idempotency_key,
            api_key_id=api_key_id,
            tools=tools,
            images=images,
            files=files,
            takes_images=self._settings.takes_images,
        )
        if images:
            await self._store.save_images(images, images_owner)
        return await self._begin(plan)


def _usage(raw: dict[str, Any] | None) -> Usage | None:
    """A stored usage object as `Usage` (None: none stored, or a damaged one)."""
    if not raw:
        return None
    try:
        return Usage(**{k: raw[k] for k in raw if k in _USAGE_FIELDS})
    except TypeError:
        return None


_USAGE_FIELDS = frozenset(Usage.__dataclass_fields__)
