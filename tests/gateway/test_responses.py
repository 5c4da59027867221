"""OpenAI's Responses API through the gateway, as the official `openai` SDK uses it:
`responses.create` streamed and whole, tools and their outputs, `previous_response_id`,
background runs read back with `retrieve` (whole, or streamed from `starting_after`),
`cancel` and `delete`; over a real uvicorn server and the fake upstream (OpenAI's wire
format). Two workers sharing a run: `tests/scaleout/test_responses_workers.py`."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from streamkeep.config import ProviderConfig
from streamkeep.server import begin_shutdown
from tests.fakes.upstream import Script
from tests.fakes.upstream_wire import lorem
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.imagekit import data_uri, echo_tag, png, sha
from tests.scaleout.waits import eventually

words = lorem


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)


@pytest.fixture(params=["kept", "relay", "anthropic"])
async def gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    """Kept or relayed, over the fake speaking OpenAI's wire; kept, over Anthropic's."""
    return await _gateway(request, gateway_factory)


@pytest.fixture(params=["openai", "anthropic"])
async def kept_gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    return await _gateway(request, gateway_factory)


async def _gateway(request: pytest.FixtureRequest, factory: GatewayFactory) -> Gateway:
    overrides: dict[str, Any] = {"gateway_store": request.param != "relay"}
    if request.param == "anthropic":
        upstream = request.getfixturevalue("fake_upstream")
        provider = ProviderConfig(
            kind="anthropic", base_url=upstream.root_url, api_key="x", models=["fake-model"]
        )
        overrides["providers"] = {"fake": provider}
    return await factory(**overrides)


def anthropic_wire(gw: Gateway) -> bool:
    return gw.app.state.settings.providers["fake"].kind == "anthropic"


async def test_a_streamed_response_is_the_upstream_answer_event_by_event(gw: Gateway) -> None:
    client = gw.async_client()
    gw.upstream.enqueue(Script(tokens=6))
    stream = await client.responses.create(model=MODEL, input="Hi there", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert types.count("response.output_text.delta") == 6
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response  # type: ignore[union-attr]
    assert done.status == "completed"
    assert done.output_text == words(6)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == words(6)
    assert done.usage is not None and done.usage.output_tokens == 6
    sent = gw.upstream.requests[-1]
    assert [(m["role"], text_of(m)) for m in sent["messages"]] == [("user", "Hi there")]


async def test_the_sdk_stream_helper_gets_the_final_response(gw: Gateway) -> None:
    client = gw.async_client()
    gw.upstream.enqueue(Script(tokens=4))
    async with client.responses.stream(model=MODEL, input="Hi", instructions="Be brief") as s:
        texts = [e.delta async for e in s if e.type == "response.output_text.delta"]
        final = await s.get_final_response()
    assert "".join(texts) == final.output_text == words(4)
    assert final.instructions == "Be brief"
    sent = gw.upstream.requests[-1]
    if anthropic_wire(gw):
        assert sent["system"] in ("Be brief", [{"type": "text", "text": "Be brief"}])
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief"}


async def test_a_whole_response(gw: Gateway) -> None:
    client = gw.async_client()
    gw.upstream.enqueue(Script(tokens=5))
    response = await client.responses.create(model=MODEL, input="Hi")
    assert response.status == "completed"
    assert response.output_text == words(5)
    assert response.usage is not None and response.usage.total_tokens == 1 + 5
    assert response.id.startswith("resp_")


async def test_a_function_call_and_its_output_continue_the_stored_chat(kept_gw: Gateway) -> None:
    gateway = kept_gw
    client = gateway.async_client()
    tools: Any = [
        {
            "type": "function",
            "name": "weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    gateway.upstream.enqueue(Script(tool="weather"))
    first = await client.responses.create(model=MODEL, input="Oslo", tools=tools, stream=True)
    events = [e async for e in first]
    call_events = [e.type for e in events if "function_call" in e.type]
    assert call_events[-1] == "response.function_call_arguments.done"
    done = events[-1].response  # type: ignore[union-attr]
    (call,) = [item for item in done.output if item.type == "function_call"]
    assert call.name == "weather" and orjson.loads(call.arguments) == {"q": "Oslo"}

    gateway.upstream.enqueue(Script(text="It is sunny."))
    second = await client.responses.create(
        model=MODEL,
        previous_response_id=done.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=tools,
    )
    assert second.output_text == "It is sunny."
    assert second.previous_response_id == done.id
    sent = gateway.upstream.requests[-1]["messages"]
    if anthropic_wire(gateway):  # the fake checked the tool_result answers the tool_use
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert sent[1]["content"][-1]["id"] == call.call_id
        assert sent[2]["content"][0]["tool_use_id"] == call.call_id
    else:
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["tool_calls"][0]["id"] == call.call_id
        assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}

    chat_id = (await gateway.http.get(f"/v1/responses/{second.id}")).headers.get(
        "x-streamkeep-chat-id"
    )
    assert chat_id is None  # retrieving says nothing of chats
    stored = await client.responses.retrieve(second.id)
    assert stored.output_text == "It is sunny." and stored.status == "completed"
    first_again = await client.responses.retrieve(done.id)
    assert first_again.output[0].type == "function_call"


async def test_previous_response_id_sends_the_stored_history(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(text="Nice to meet you, Ada."))
    first = await client.responses.create(model=MODEL, input="I am Ada", instructions="Be kind")
    gateway.upstream.enqueue(Script(text="You are Ada."))
    second = await client.responses.create(
        model=MODEL, input="Who am I?", previous_response_id=first.id
    )
    assert second.output_text == "You are Ada."
    sent = gateway.upstream.requests[-1]["messages"]
    # Instructions are not carried over (OpenAI's rule); the history is.
    assert sent == [
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "Who am I?"},
    ]
    r = await gateway.http.post(
        "/v1/responses",
        json={"model": MODEL, "input": "again", "previous_response_id": "resp_nope"},
    )
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "previous_response_id"


async def test_a_background_response_runs_on_without_its_client(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=20, delay=0.02))
    created = await client.responses.create(model=MODEL, input="go", background=True)
    assert created.status == "queued" and created.background is True
    running = await client.responses.retrieve(created.id)
    assert running.status in ("queued", "in_progress", "completed")

    async def completed() -> bool:
        return (await client.responses.retrieve(created.id)).status == "completed"

    await eventually(completed, within=20)
    done = await client.responses.retrieve(created.id)
    assert done.output_text == words(20)
    assert done.usage is not None and done.usage.output_tokens == 20


async def test_a_background_stream_resumes_after_any_sequence_number(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=30, delay=0.02))
    stream = await client.responses.create(model=MODEL, input="go", background=True, stream=True)
    seen: list[Any] = []
    async for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) >= 8:
            break  # the client drops the connection mid-answer
    await stream.close()
    response_id = seen[0].response.id
    last = seen[-1].sequence_number

    rest_stream = await client.responses.retrieve(response_id, stream=True, starting_after=last)
    rest = [event async for event in rest_stream]
    both = seen + rest
    assert [e.sequence_number for e in both] == list(range(len(both)))
    assert both[-1].type == "response.completed"
    text = "".join(e.delta for e in both if e.type == "response.output_text.delta")
    assert text == words(30)

    # From the start, the same events again (within the replay window).
    again = [e async for e in await client.responses.retrieve(response_id, stream=True)]
    assert [e.model_dump() for e in again] == [e.model_dump() for e in both]


async def test_cancel_stops_a_background_response_and_keeps_the_partial(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=400, delay=0.02))
    created = await client.responses.create(model=MODEL, input="go", background=True)

    async def some_output() -> bool:  # some of it is checkpointed
        return bool((await client.responses.retrieve(created.id)).output)

    await eventually(some_output, within=20)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    partial = cancelled.output_text
    assert partial and words(400).startswith(partial) and partial != words(400)
    await asyncio.wait_for(gateway.upstream.wait_idle(), 10)  # the upstream was closed
    stored = await client.responses.retrieve(created.id)
    assert stored.status == "cancelled" and stored.output_text == partial
    events = [e async for e in await client.responses.retrieve(created.id, stream=True)]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "cancelled"  # type: ignore[union-attr]
    again = await client.responses.cancel(created.id)  # idempotent
    assert again.status == "cancelled"


async def test_delete_removes_the_response_and_its_input(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(text="One."))
    first = await client.responses.create(model=MODEL, input="first")
    gateway.upstream.enqueue(Script(text="Two."))
    second = await client.responses.create(
        model=MODEL, input="second", previous_response_id=first.id
    )
    r = await gateway.http.post("/v1/responses", json={"model": MODEL, "input": "x"})
    chat_of = r.headers["x-streamkeep-chat-id"]
    assert chat_of
    r = await gateway.http.delete(f"/v1/responses/{second.id}")
    assert r.status_code == 200 and r.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(second.id)
    kept_first = await client.responses.retrieve(first.id)
    assert kept_first.output_text == "One."
    # The chat is back to the first exchange: the second input went with its reply.
    chats = (await gateway.http.get("/api/chats")).json()["items"]
    (chat,) = [c for c in chats if c["id"] != chat_of]
    branch = (await gateway.http.get(f"/api/chats/{chat['id']}")).json()["messages"]
    assert [m["role"] for m in branch] == ["user", "assistant"]
    # Deleting the only response of a chat deletes the chat.
    await client.responses.delete(first.id)
    assert (await gateway.http.get(f"/api/chats/{chat['id']}")).status_code == 404
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(first.id)


async def test_an_unknown_or_malformed_response_id_is_a_404(gateway: Gateway) -> None:
    client = gateway.async_client()
    for rid in ("resp_unknown", "gen_abc", "chat_x"):
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            await client.responses.cancel(rid)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": MODEL, "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": MODEL, "input": "hi", "background": True, "store": False}, "background"),
        ({"model": MODEL, "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": MODEL, "input": "hi", "temperature": 9}, "temperature"),
        (
            {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content",
        ),
        (
            {
                "model": MODEL,
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ],
            },
            "input[0].content",
        ),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field_and_stores_nothing(
    gateway: Gateway, body: dict[str, Any], param: str
) -> None:
    r = await gateway.http.post("/v1/responses", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert (await gateway.http.get("/api/chats")).json()["items"] == []
    assert gateway.upstream.requests == []


async def test_a_provider_refusal_is_its_status_and_a_failure_mid_answer_ends_failed(
    gw: Gateway,
) -> None:
    client = gw.async_client()
    gw.upstream.enqueue(Script(status=400))
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model=MODEL, input="hi", stream=True)
    gw.upstream.enqueue(Script(tokens=10, error_after=3))
    stream = await client.responses.create(model=MODEL, input="hi", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    assert failed.output_text == words(3)


async def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=3))
    response = await client.responses.create(model=MODEL, input="hi", store=False)
    assert response.output_text == words(3)
    assert (await gateway.http.get("/api/chats")).json()["items"] == []
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_another_users_response_is_not_found_anywhere(gateway: Gateway) -> None:
    store = gateway.app.state.store
    keys = []
    for name in ("alice", "bob"):
        user = await store.create_user(name, "a long enough password")
        keys.append((await store.create_api_key(user.id, name="tests"))[1])
    alice_c = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=keys[0], max_retries=0)
    bob_c = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=keys[1], max_retries=0)
    gateway.upstream.enqueue(Script(tokens=3))
    mine = await alice_c.responses.create(model=MODEL, input="secret")
    for attempt in (
        bob_c.responses.retrieve(mine.id),
        bob_c.responses.cancel(mine.id),
        bob_c.responses.delete(mine.id),
        bob_c.responses.create(model=MODEL, input="x", previous_response_id=mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert (await alice_c.responses.retrieve(mine.id)).output_text == words(3)
    with pytest.raises(openai.AuthenticationError):
        await gateway.async_client().responses.retrieve(mine.id)


async def test_a_shutdown_mid_answer_ends_the_stream_failed_and_keeps_the_partial(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(shutdown_grace=0.2)
    gateway.upstream.enqueue(Script(tokens=1000, delay=0.01))
    client = gateway.async_client()
    stream = await client.responses.create(model=MODEL, input="go", background=True, stream=True)
    events = []
    async for event in stream:
        if event.type == "response.output_text.delta" and not any(
            e.type == "response.output_text.delta" for e in events
        ):
            begin_shutdown(gateway.app)  # the grace period ends mid-answer
        events.append(event)
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.error is not None and "shut down" in last.response.error.message  # type: ignore[union-attr]
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed and streamed != words(1000)
    store = gateway.app.state.store
    record = await store.get_generation(last.response.id)  # type: ignore[union-attr]
    message = await store.get_message(record.message_id)
    assert message.status == "interrupted"
    assert "".join(p["text"] for p in message.parts if p["type"] == "text") == streamed


async def test_a_background_stream_runs_on_when_its_client_leaves_despite_stop_on_disconnect(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(stop_on_disconnect=True)
    client = gateway.async_client()
    for background in (True, False):
        gateway.upstream.enqueue(Script(tokens=30, delay=0.02))
        stream = await client.responses.create(
            model=MODEL, input="go", background=background, stream=True
        )
        first = [event async for event in _first_delta(stream)]
        await stream.close()
        response_id = first[0].response.id

        async def ended(rid: str = response_id) -> bool:
            status = (await client.responses.retrieve(rid)).status
            return status not in ("queued", "in_progress")

        await eventually(ended, within=20)
        final = await client.responses.retrieve(response_id)
        if background:  # the run belongs to the server
            assert final.status == "completed" and final.output_text == words(30)
        else:  # a foreground stream is the client's: stopped with it
            assert final.status == "cancelled"


async def _first_delta(stream: Any) -> Any:
    async for event in stream:
        yield event
        if event.type == "response.output_text.delta":
            return


async def test_every_event_and_response_validates_strictly_against_the_sdk_types(
    gw: Gateway,
) -> None:
    """The SDK parses without validating; its pydantic types, applied strictly, are the
    contract: every field they require is there, with the right type."""
    events = TypeAdapter(ResponseStreamEvent)
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    cases = [
        Script(tokens=4, reasoning=3),
        Script(tool="weather", text="Let me look."),
        Script(tokens=50, finish="length"),
        Script(tokens=10, error_after=3),
    ]
    for script in cases:
        gw.upstream.enqueue(script)
        body = {"model": MODEL, "input": "Oslo", "tools": tools, "stream": True}
        async with gw.http.stream("POST", "/v1/responses", json=body) as r:
            assert r.status_code == 200
            datas = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
        parsed = [events.validate_json(data, strict=True) for data in datas]
        assert parsed[-1].type in ("response.completed", "response.incomplete", "response.failed")
        if parsed[-1].type == "response.completed" and kept_store(gw):
            stored = await gw.http.get(f"/v1/responses/{parsed[-1].response.id}")
            Response.model_validate_json(stored.content, strict=True)
    gw.upstream.enqueue(Script(tokens=3))
    whole = await gw.http.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    Response.model_validate_json(whole.content, strict=True)


def kept_store(gw: Gateway) -> bool:
    return bool(gw.app.state.settings.gateway_store)


async def test_a_chain_of_function_calls_continues_turn_after_turn(kept_gw: Gateway) -> None:
    client = kept_gw.async_client()
    tools: Any = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    response_id: str | None = None
    items: list[Any] = [{"role": "user", "content": "city 0"}]
    for turn in range(3):
        kept_gw.upstream.enqueue(Script(tool="weather", text=f"Turn {turn}."))
        response = await client.responses.create(
            model=MODEL,
            input=items,
            previous_response_id=response_id if response_id is not None else openai.omit,
            tools=tools,
        )
        assert response.status == "completed", response
        (call,) = [item for item in response.output if item.type == "function_call"]
        response_id = response.id
        items = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    sent = kept_gw.upstream.requests[-1]["messages"]
    if anthropic_wire(kept_gw):
        results = [b for m in sent for b in m["content"] if b.get("type") == "tool_result"]
    else:
        results = [m for m in sent if m["role"] == "tool"]
    assert len(results) == 2  # both earlier calls, each with its answer, in order
    assert not kept_gw.upstream.rejected


async def test_a_function_call_output_answering_no_call_is_a_400(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text="Hi."))
    first = await gateway.async_client().responses.create(model=MODEL, input="hi")
    for body in (
        {
            "model": MODEL,
            "input": [{"type": "function_call_output", "call_id": "zz", "output": "x"}],
        },
        {
            "model": MODEL,
            "previous_response_id": first.id,
            "input": [{"type": "function_call_output", "call_id": "zz", "output": "x"}],
        },
    ):
        r = await gateway.http.post("/v1/responses", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "input[0].call_id"
    assert len(gateway.upstream.requests) == 1  # only the first call reached it
    (chat,) = (await gateway.http.get("/api/chats")).json()["items"]
    branch = (await gateway.http.get(f"/api/chats/{chat['id']}")).json()["messages"]
    assert len(branch) == 2


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "function_call"}, "input[0].call_id"),
        ({"type": "function_call_output", "call_id": "c", "output": 5}, "input[0].output"),
        (5, "input[0]"),
    ],
)
async def test_a_malformed_item_names_its_own_field(
    gateway: Gateway, item: Any, param: str
) -> None:
    r = await gateway.http.post("/v1/responses", json={"model": MODEL, "input": [item]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_store_false_cannot_continue_a_response(gateway: Gateway) -> None:
    body = {"model": MODEL, "input": "x", "previous_response_id": "resp_x", "store": False}
    r = await gateway.http.post("/v1/responses", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"
    assert gateway.upstream.requests == []


async def test_continuing_a_running_response_is_a_409_naming_it(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=300, delay=0.02))
    running = await client.responses.create(model=MODEL, input="go", background=True)
    r = await gateway.http.post(
        "/v1/responses",
        json={"model": MODEL, "input": "more", "previous_response_id": running.id},
    )
    assert r.status_code == 409
    assert r.json()["error"]["param"] == "previous_response_id"
    await client.responses.cancel(running.id)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("stream=maybe", "stream"),
        ("stream=true&starting_after=-1", "starting_after"),
        ("stream=true&starting_after=1.5", "starting_after"),
    ],
)
async def test_bad_query_parameters_are_a_400_naming_them(
    gateway: Gateway, query: str, param: str
) -> None:
    gateway.upstream.enqueue(Script(tokens=2))
    done = await gateway.async_client().responses.create(model=MODEL, input="hi")
    r = await gateway.http.get(f"/v1/responses/{done.id}?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_a_whole_response_can_be_streamed_again(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tokens=5))
    whole = await client.responses.create(model=MODEL, input="hi")
    events = [e async for e in await client.responses.retrieve(whole.id, stream=True)]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == whole.output_text == words(5)  # type: ignore[union-attr]
    async with client.responses.stream(response_id=whole.id, starting_after=2) as stream:
        final = await stream.get_final_response()
    assert final.output_text == words(5)


async def test_a_call_cut_by_a_cancel_is_incomplete_in_the_stream_and_the_store(
    gateway: Gateway,
) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(tool="weather", args_chunk=1, delay=0.05))
    stream = await client.responses.create(
        model=MODEL, input="Oslo is a fine city", background=True, stream=True
    )
    events: list[Any] = []
    async for event in stream:
        events.append(event)
        if sum(e.type == "response.function_call_arguments.delta" for e in events) == 3:
            await client.responses.cancel(events[0].response.id)
            break
    await stream.close()
    response_id = events[0].response.id
    stored = await client.responses.retrieve(response_id)
    assert stored.status == "cancelled"
    (call,) = stored.output
    assert call.type == "function_call" and call.status == "incomplete"
    replay = [e async for e in await client.responses.retrieve(response_id, stream=True)]
    done = [e for e in replay if e.type == "response.output_item.done"]
    assert done[-1].item.status == "incomplete"  # type: ignore[union-attr]
    assert done[-1].item.arguments == call.arguments  # type: ignore[union-attr]
    assert call.arguments and '{"q": "Oslo is a fine city"}'.startswith(call.arguments)


async def test_deleting_a_response_stops_a_later_one_that_continued_it(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(text="One."))
    first = await client.responses.create(model=MODEL, input="first")
    gateway.upstream.enqueue(Script(tokens=2000, delay=0.02))
    later = await client.responses.create(
        model=MODEL, input="more", previous_response_id=first.id, background=True
    )
    await client.responses.delete(first.id)
    await asyncio.wait_for(gateway.upstream.wait_idle(), 10)  # the upstream was closed
    assert gateway.upstream.closed_by_client >= 1
    for gone in (first.id, later.id):
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(gone)


async def test_deleting_removes_input_with_assistant_messages_in_it(gateway: Gateway) -> None:
    client = gateway.async_client()
    gateway.upstream.enqueue(Script(text="C."))
    given: Any = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    response = await client.responses.create(model=MODEL, input=given)
    assert [m["role"] for m in gateway.upstream.requests[-1]["messages"]] == [
        "user",
        "assistant",
        "user",
    ]
    await client.responses.delete(response.id)
    assert (await gateway.http.get("/api/chats")).json()["items"] == []


async def test_an_input_image_reaches_the_upstream_in_its_format_and_is_kept(
    kept_gw: Gateway,
) -> None:
    client = kept_gw.async_client()
    image = png(5, 4)
    content: Any = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": data_uri(image), "detail": "auto"},
    ]
    first = await client.responses.create(model=MODEL, input=[{"role": "user", "content": content}])
    assert first.output_text == f"Hello! You said: what is this? [images: {echo_tag(image)}]"
    sent = kept_gw.upstream.requests[-1]["messages"][-1]["content"]
    if anthropic_wire(kept_gw):
        source = {"type": "base64", "media_type": "image/png", "data": data_uri(image)[22:]}
        assert sent[0] == {"type": "image", "source": source}
    else:
        assert sent[0] == {"type": "image_url", "image_url": {"url": data_uri(image)}}
    url = f"/api/images/{sha(image)}"
    assert (await kept_gw.http.get(url)).content == image

    # The next turn sends the stored image again with the history.
    second = await client.responses.create(
        model=MODEL, input="and now?", previous_response_id=first.id
    )
    assert second.status == "completed"
    history = kept_gw.upstream.requests[-1]["messages"]
    kinds = [p.get("type") for m in history if isinstance(m["content"], list) for p in m["content"]]
    assert kinds.count("image" if anthropic_wire(kept_gw) else "image_url") == 1
    assert kept_gw.upstream.rejected == []


async def test_an_input_image_for_a_model_without_images_stores_nothing(
    gateway_factory: GatewayFactory, fake_upstream: Any
) -> None:
    blind = ProviderConfig(
        kind="openai",
        base_url=fake_upstream.base_url,
        api_key="x",
        models=["fake-model"],
        images=False,
    )
    gateway = await gateway_factory(providers={"fake": blind})
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": data_uri(png())},
    ]
    r = await gateway.http.post(
        "/v1/responses", json={"model": MODEL, "input": [{"role": "user", "content": content}]}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "images_not_supported"
    assert (await gateway.http.get("/api/chats")).json()["items"] == []
    assert gateway.upstream.requests == []
