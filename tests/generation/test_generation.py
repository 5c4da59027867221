"""One generation end to end: real store, real HTTP to a fake OpenAI-style upstream."""

from __future__ import annotations

import asyncio

import pytest

from streamkeep.generation import GenerationManager
from streamkeep.llm.usage import estimate_tokens
from streamkeep.store import ChatStore
from tests.fakes.upstream import FakeUpstream, Script
from tests.generation.conftest import MODEL, ManagerFactory
from tests.generation.gates import hold
from tests.generation.streams import deltas, parse, read_all, read_until, stored_text, text, types


async def new_chat(store: ChatStore, system: str | None = None) -> str:
    return (await store.create_chat(model=MODEL, system=system)).id


async def test_a_reply_streams_the_protocol_and_is_stored_complete(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store, system="be brief")
    fake_upstream.enqueue(Script(text="Hello there, friend."))
    gen = await manager.reply(chat_id=chat_id, content="hi")

    frames = await read_all(gen)

    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert types(frames) == [
        "start",
        "start-step",
        "text-start",
        *["text-delta"] * 3,
        "text-end",
        "finish-step",
        "message-metadata",
        "finish",
        "[DONE]",
    ]
    start = frames[0].data
    assert start["messageId"] == gen.message_id
    assert start["messageMetadata"]["chatId"] == chat_id
    assert start["messageMetadata"]["model"] == MODEL
    assert text(frames) == "Hello there, friend."
    meta = frames[-3].data["messageMetadata"]
    assert meta["status"] == "complete" and meta["finishReason"] == "stop"
    assert meta["usage"]["output_tokens"] == 3
    assert frames[-2].data == {"type": "finish", "finishReason": "stop"}

    message = await store.get_message(gen.message_id)
    assert message.status == "complete" and message.finish_reason == "stop"
    assert message.parts == [{"type": "text", "text": "Hello there, friend."}]
    assert message.usage is not None and message.usage["output_tokens"] == 3
    assert gen.user_message_id is not None
    user = await store.get_message(gen.user_message_id)
    assert user.parts == [{"type": "text", "text": "hi"}] and message.parent_id == user.id
    sent = fake_upstream.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [("system", "be brief"), ("user", "hi")]
    assert gen.status == "complete"


async def test_the_finish_frame_comes_only_after_the_message_is_stored(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    chat_id = await new_chat(store)
    final_write = hold(request, store, "finish_reply")  # the real write, held back
    fake_upstream.enqueue(Script(tokens=20))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    await final_write.wait_entered()  # the answer is complete; its write has not run

    subscription = gen.subscribe()
    # The first read hands over everything the log holds at this moment.
    now = parse(await anext(subscription))
    assert sum(t == "text-delta" for t in types(now)) == 20
    assert "finish" not in types(now) and "message-metadata" not in types(now)
    assert (await store.get_message(gen.message_id)).status == "streaming"

    final_write.open()
    rest = await read_until(subscription, lambda frames: frames[-1].type == "[DONE]")
    await subscription.aclose()
    assert types(rest)[-3:] == ["message-metadata", "finish", "[DONE]"]
    assert rest[-3].data["messageMetadata"]["stored"] is True
    message = await store.get_message(gen.message_id)
    assert message.status == "complete"
    assert len(stored_text(message.parts).split()) == 20


async def test_reasoning_and_tool_calls_are_streamed_and_stored(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(reasoning=2, tool="search"))
    gen = await manager.reply(chat_id=chat_id, content="find cats")

    frames = await read_all(gen)

    seen = types(frames)
    assert seen[2:5] == ["reasoning-start", "reasoning-delta", "reasoning-delta"]
    assert seen[5:7] == ["reasoning-end", "tool-input-start"]
    assert "tool-input-delta" in seen
    available = next(f.data for f in frames if f.type == "tool-input-available")
    assert available["toolName"] == "search" and available["input"] == {"q": "find cats"}
    assert frames[-2].data == {"type": "finish", "finishReason": "tool-calls"}
    message = await store.get_message(gen.message_id)
    assert message.status == "complete" and message.finish_reason == "tool-calls"
    reasoning, tool = message.parts
    assert reasoning["type"] == "reasoning" and len(reasoning["text"].split()) == 2
    assert tool == {
        "type": "tool-search",
        "toolCallId": available["toolCallId"],
        "state": "input-available",
        "input": {"q": "find cats"},
    }


async def test_a_client_leaving_does_not_stop_the_generation(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=12, delay=0.01))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    stream = gen.subscribe()
    await read_until(stream, deltas(1))
    await stream.aclose()  # the browser tab closed
    assert gen.subscribers == 0

    async with asyncio.timeout(20):
        await gen.wait()
    message = await store.get_message(gen.message_id)
    assert message.status == "complete"
    assert len(stored_text(message.parts).split()) == 12
    assert fake_upstream.closed_by_client == 0


async def test_stop_on_disconnect_stops_when_the_last_subscriber_leaves(
    manager_factory: ManagerFactory, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    async with manager_factory(stop_on_disconnect=True) as manager:
        chat_id = await new_chat(store)
        fake_upstream.enqueue(Script(tokens=10, hang_after=3))
        gen = await manager.reply(chat_id=chat_id, content="hi")
        first, second = gen.subscribe(), gen.subscribe()
        await read_until(first, deltas(3))
        await read_until(second, deltas(3))
        await first.aclose()
        assert not gen.done.is_set()  # one client is still watching
        await second.aclose()
        async with asyncio.timeout(20):
            await gen.wait()
            await fake_upstream.wait_idle()
        message = await store.get_message(gen.message_id)
        assert message.status == "stopped"
        assert stored_text(message.parts) == "lorem ipsum dolor"
        assert fake_upstream.closed_by_client == 1


async def test_stop_mid_stream_keeps_the_partial_answer_and_closes_the_upstream(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=10, hang_after=3))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    stream = gen.subscribe()
    frames = await read_until(stream, deltas(3))

    assert await manager.stop(chat_id) is True

    async with asyncio.timeout(20):
        frames += [f async for chunk in stream for f in parse(chunk)]
        await fake_upstream.wait_idle()
    assert fake_upstream.open_streams == 0 and fake_upstream.closed_by_client == 1
    assert types(frames)[-6:] == [
        "text-end",
        "finish-step",
        "message-metadata",
        "abort",
        "finish",
        "[DONE]",
    ]
    assert frames[-4].data["messageMetadata"]["status"] == "stopped"
    message = await store.get_message(gen.message_id)
    assert message.status == "stopped" and message.error is None
    # The provider never got to report usage: it is estimated from what was relayed.
    assert message.usage is not None and message.usage["estimated"] is True
    assert message.usage["output_tokens"] == estimate_tokens(len("lorem ipsum dolor"))
    assert stored_text(message.parts) == "lorem ipsum dolor" == text(frames)
    assert await manager.stop(chat_id) is False  # nothing left to stop
    assert await store.running_generation(chat_id) is None


async def test_a_provider_dropping_the_connection_stores_the_partial_answer_as_error(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=10, fail_after=4))
    gen = await manager.reply(chat_id=chat_id, content="hi")

    frames = await read_all(gen)

    error = next(f.data for f in frames if f.type == "error")
    assert error["errorText"]
    assert types(frames)[-6:] == [
        "text-end",
        "error",
        "finish-step",
        "message-metadata",
        "finish",
        "[DONE]",
    ]
    assert frames[-2].data == {"type": "finish", "finishReason": "error"}
    message = await store.get_message(gen.message_id)
    assert message.status == "error" and message.finish_reason == "error"
    assert message.error == error["errorText"]
    assert stored_text(message.parts) == "lorem ipsum dolor sit" == text(frames)


@pytest.mark.parametrize(
    "fault",
    [
        {"cut_after": 4},  # the body ends well-formed: a proxy that gave up
        {"cut_after": 4, "framing": "close"},  # a connection closed mid-answer
        {"reset_after": 4, "framing": "close"},  # reset where the close ends the body
    ],
)
async def test_a_stream_cut_short_is_stored_as_error_never_complete(
    manager: GenerationManager,
    store: ChatStore,
    fake_upstream: FakeUpstream,
    fault: dict[str, object],
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=10, **fault))  # type: ignore[arg-type]
    gen = await manager.reply(chat_id=chat_id, content="hi")

    frames = await read_all(gen)

    cut_short = "the provider closed the stream before finishing"
    assert types(frames)[-6:] == [
        "text-end",
        "error",
        "finish-step",
        "message-metadata",
        "finish",
        "[DONE]",
    ]
    assert frames[-5].data == {"type": "error", "errorText": cut_short}
    meta = frames[-3].data["messageMetadata"]
    assert (meta["status"], meta["finishReason"], meta["error"]) == ("error", "error", cut_short)
    assert frames[-2].data == {"type": "finish", "finishReason": "error"}
    message = await store.get_message(gen.message_id)
    assert (message.status, message.finish_reason) == ("error", "error")
    assert message.error == cut_short
    assert stored_text(message.parts) == "lorem ipsum dolor sit" == text(frames)


async def test_an_in_stream_provider_error_stores_the_partial_answer_as_error(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=10, error_after=2))
    gen = await manager.reply(chat_id=chat_id, content="hi")

    frames = await read_all(gen)

    assert "error" in types(frames)
    message = await store.get_message(gen.message_id)
    assert message.status == "error" and message.error
    assert stored_text(message.parts) == "lorem ipsum"


async def test_resume_after_n_yields_exactly_the_frames_after_n(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(tokens=8, hang_after=4))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    stream = gen.subscribe()
    seen = await read_until(stream, deltas(2))
    await stream.aclose()  # the connection dropped mid-stream
    last = seen[-1].seq

    resumed = asyncio.create_task(read_all(gen, after=last))  # the client reconnects
    await manager.stop(chat_id)
    rest = await resumed

    full = await read_all(gen)
    assert [f.seq for f in seen + rest] == [f.seq for f in full]
    assert seen + rest == full
    for n in (0, 1, last, len(full) - 1, len(full)):
        assert await read_all(gen, after=n) == full[n:]


async def test_a_provider_refusing_the_request_stores_an_error_without_content(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(status=400))
    gen = await manager.reply(chat_id=chat_id, content="hi")

    frames = await read_all(gen)

    assert types(frames) == [
        "start",
        "start-step",
        "error",
        "finish-step",
        "message-metadata",
        "finish",
        "[DONE]",
    ]
    assert "400" in frames[2].data["errorText"]
    message = await store.get_message(gen.message_id)
    assert message.status == "error" and message.parts == []
    assert message.error == frames[2].data["errorText"]


async def test_a_nul_character_from_the_model_is_stored_as_a_replacement(
    manager: GenerationManager, store: ChatStore, fake_upstream: FakeUpstream
) -> None:
    # PostgreSQL refuses U+0000; the reply (and the chat after it) must still be kept.
    chat_id = await new_chat(store)
    fake_upstream.enqueue(Script(text="bad \x00 token"))
    gen = await manager.reply(chat_id=chat_id, content="hi")
    frames = await read_all(gen)
    assert text(frames) == "bad \x00 token"  # the client sees what the model sent
    message = await store.get_message(gen.message_id)
    assert message.status == "complete"
    assert message.parts == [{"type": "text", "text": "bad \ufffd token"}]
    fake_upstream.enqueue(Script(text="fine"))
    assert text(await read_all(await manager.reply(chat_id=chat_id, content="again"))) == "fine"
