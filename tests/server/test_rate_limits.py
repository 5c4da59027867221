"""Limits per user and per API key through the real server: 429 with `Retry-After` and
a message naming the limit, nothing started by a refused request, and recovery.

The server's limiter is swapped for one on a clock the test moves (same classes, the
app's own wiring), so a minute or a day passes without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from streamkeep.config import LimitsConfig, LimitSpec
from streamkeep.http.auth import AuthGate
from streamkeep.http.limits import Limiter, LimitExceeded, Subject, subjects_for
from streamkeep.http.quotas import Quotas
from tests.server.conftest import Server, ServerFactory
from tests.server.isolation import SLOW
from tests.server.sse import Event, read_all


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # some UTC day, 10:40

    def __call__(self) -> float:
        return self.now


@dataclass
class Limited:
    server: Server
    clock: Clock
    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    alice_key_prefix: str
    limits: LimitsConfig


MakeLimited = Callable[..., Coroutine[Any, Any, Limited]]


@pytest.fixture
async def make_limited(server_factory: ServerFactory) -> AsyncIterator[MakeLimited]:
    clients: list[httpx.AsyncClient] = []

    async def make(limits: LimitsConfig, **settings: Any) -> Limited:
        server = await server_factory(limits=limits, **settings)
        clock = Clock()
        limiter = Limiter.in_memory(clock=clock)
        server.app.state.quotas = Quotas(limiter)
        server.app.state.auth = AuthGate(
            server.store, forced_off=False, limiter=limiter, limits=limits
        )
        made = []
        prefix = ""
        for name in ("alice", "bob"):
            user = await server.store.create_user(name, "pw")
            record, key = await server.store.create_api_key(user.id)
            prefix = prefix or record.prefix
            client = httpx.AsyncClient(
                base_url=server.url, timeout=30, headers={"authorization": f"Bearer {key}"}
            )
            clients.append(client)
            made.append(client)
        return Limited(server, clock, made[0], made[1], prefix, limits)

    yield make
    for client in clients:
        await client.aclose()


def _refused(r: httpx.Response, limit: str) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["type"] == "rate_limited"
    assert limit in r.json()["error"]["message"]
    return int(r.headers["retry-after"])


async def test_requests_per_minute_refuse_with_retry_after_and_recover(
    make_limited: MakeLimited,
) -> None:
    lim = await make_limited(LimitsConfig(user=LimitSpec(requests_per_minute=3)))
    for _ in range(3):
        assert (await lim.alice.get("/api/chats")).status_code == 200
    r = await lim.alice.post("/api/chats", json={})
    wait = _refused(r, "3 requests per minute for user alice")
    assert 1 <= wait <= 60
    assert (await lim.bob.get("/api/chats")).status_code == 200  # bob has his own count
    # The refused request made nothing, and counted nothing.
    lim.clock.now += wait
    assert (await lim.alice.get("/api/chats")).json()["items"] == []


async def test_a_key_override_limits_the_key_not_its_user(make_limited: MakeLimited) -> None:
    # An override by prefix needs the prefix first: a server, then its limits.
    probe = await make_limited(LimitsConfig())
    limits = LimitsConfig(keys={probe.alice_key_prefix: LimitSpec(requests_per_minute=1)})
    probe.server.app.state.auth = AuthGate(
        probe.server.store,
        forced_off=False,
        limiter=Limiter.in_memory(clock=probe.clock),
        limits=limits,
    )
    assert (await probe.alice.get("/api/me")).status_code == 200
    _refused(await probe.alice.get("/api/me"), f"for API key {probe.alice_key_prefix}")
    assert (await probe.bob.get("/api/me")).status_code == 200


async def test_concurrent_generations_refuse_a_second_reply_until_the_first_ends(
    make_limited: MakeLimited,
) -> None:
    lim = await make_limited(LimitsConfig(key=LimitSpec(concurrent_generations=1)))
    first = (await lim.alice.post("/api/chats", json={})).json()["id"]
    second = (await lim.alice.post("/api/chats", json={})).json()["id"]
    async with lim.alice.stream(
        "POST", f"/api/chats/{first}/messages", json={"content": SLOW}
    ) as live:
        assert live.status_code == 200
        r = await lim.alice.post(f"/api/chats/{second}/messages", json={"content": "hi"})
        _refused(r, "1 concurrent generation for API key")
        # The gateway counts against the same slots.
        r = await lim.alice.post(
            "/v1/chat/completions",
            json={"model": "fake/fake-model", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 429 and "retry-after" in r.headers
        await read_all(live)
    # Refused requests stored nothing.
    assert (await lim.alice.get(f"/api/chats/{second}")).json()["messages"] == []
    assert len((await lim.alice.get("/api/chats")).json()["items"]) == 2
    # The first reply's end gave the slot back (its settling runs just after).
    for _ in range(100):
        async with lim.alice.stream(
            "POST", f"/api/chats/{second}/messages", json={"content": "hi"}
        ) as r:
            if r.status_code == 200:
                await read_all(r)
                break
        await lim.server.client.get("/healthz")
    assert (await lim.alice.get(f"/api/chats/{second}")).json()["messages"][-1]["status"] == (
        "complete"
    )


async def test_a_token_budget_stops_new_replies_until_the_next_period(
    make_limited: MakeLimited,
) -> None:
    lim = await make_limited(LimitsConfig(user=LimitSpec(tokens_per_period=5, period="day")))
    chat = (await lim.alice.post("/api/chats", json={})).json()["id"]
    async with lim.alice.stream(
        "POST", f"/api/chats/{chat}/messages", json={"content": "[[tokens=8]] hi"}
    ) as r:
        assert r.status_code == 200
        await read_all(r)
    message = (await lim.alice.get(f"/api/chats/{chat}")).json()["messages"][-1]
    spent = message["usage"]["input_tokens"] + message["usage"]["output_tokens"]
    assert spent >= 5  # the reply that crosses the budget finishes
    # Its tokens are counted as it settles, just after its end.
    alice = await lim.server.store.get_user_by_name("alice")
    subjects = subjects_for(lim.limits, user_id=alice.id, user_name="alice")
    async with asyncio.timeout(10):
        while True:
            try:
                await lim.server.app.state.quotas.limiter.check_budget(subjects)
            except LimitExceeded:
                break
            await asyncio.sleep(0.01)
    r = await lim.alice.post(f"/api/chats/{chat}/messages", json={"content": "more"})
    wait = _refused(r, "5 tokens per day for user alice")
    assert 1 <= wait <= 24 * 3600
    assert len((await lim.alice.get(f"/api/chats/{chat}")).json()["messages"]) == 2
    assert (await lim.bob.post("/api/chats", json={})).status_code == 201
    lim.clock.now += wait  # the next day
    async with lim.alice.stream(
        "POST", f"/api/chats/{chat}/messages", json={"content": "more"}
    ) as r:
        assert r.status_code == 200
        await read_all(r)


async def test_a_retry_that_joins_its_reply_takes_no_slot_and_spends_nothing(
    make_limited: MakeLimited,
) -> None:
    limits = LimitsConfig(user=LimitSpec(concurrent_generations=1, tokens_per_period=10**9))
    lim = await make_limited(limits)
    chat = (await lim.alice.post("/api/chats", json={})).json()["id"]
    path, key = f"/api/chats/{chat}/messages", {"idempotency-key": "retry-1"}
    async with lim.alice.stream("POST", path, json={"content": SLOW}, headers=key) as first:
        assert first.status_code == 200
        # The client lost the connection and asks again, as Idempotency-Key is for.
        async with lim.alice.stream("POST", path, json={"content": SLOW}, headers=key) as retry:
            assert retry.status_code == 200, await retry.aread()
            joined = await read_all(retry)
        whole = await read_all(first)
    assert joined[-1].type == whole[-1].type == "[DONE]"
    messages = (await lim.alice.get(f"/api/chats/{chat}")).json()["messages"]
    assert len(messages) == 2
    await _counted_once(lim, messages[-1]["usage"])


async def test_same_key_requests_at_once_spend_their_reply_once(
    make_limited: MakeLimited,
) -> None:
    lim = await make_limited(LimitsConfig(user=LimitSpec(tokens_per_period=10**9)))
    chat = (await lim.alice.post("/api/chats", json={})).json()["id"]
    path, key = f"/api/chats/{chat}/messages", {"idempotency-key": "twice"}

    async def ask() -> list[Event]:
        async with lim.alice.stream("POST", path, json={"content": "hi"}, headers=key) as r:
            assert r.status_code == 200, await r.aread()
            return await read_all(r)

    for events in await asyncio.gather(*(ask() for _ in range(4))):
        assert events[-1].type == "[DONE]"
    messages = (await lim.alice.get(f"/api/chats/{chat}")).json()["messages"]
    assert len(messages) == 2
    await _counted_once(lim, messages[-1]["usage"])


async def _counted_once(lim: Limited, usage: dict[str, Any]) -> None:
    """The reply's tokens were spent once (not per request that joined it): a budget
    of one more than the reply used is not spent yet."""
    spent = usage["input_tokens"] + usage["output_tokens"]
    alice = await lim.server.store.get_user_by_name("alice")
    limiter = lim.server.app.state.quotas.limiter

    def budget(tokens: int) -> tuple[Subject, ...]:
        spec = LimitsConfig(user=LimitSpec(tokens_per_period=tokens))
        return subjects_for(spec, user_id=alice.id, user_name="alice")

    async with asyncio.timeout(10):
        while True:  # until it settled
            try:
                await limiter.check_budget(budget(1))
            except LimitExceeded:
                break
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # a second settling, were there one
    await limiter.check_budget(budget(spent + 1))
    with pytest.raises(LimitExceeded):
        await limiter.check_budget(budget(spent))


def _call(content: str, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "fake/fake-model",
        "messages": [{"role": "user", "content": content}],
        "stream": stream,
    }


async def test_the_gateways_relay_is_limited_too(make_limited: MakeLimited) -> None:
    # gateway_store = false: nothing is stored, no Generation, the same limits.
    limits = LimitsConfig(user=LimitSpec(concurrent_generations=1, tokens_per_period=30))
    lim = await make_limited(limits, gateway_store=False)
    async with lim.alice.stream(
        "POST", "/v1/chat/completions", json=_call(SLOW, stream=True)
    ) as live:
        assert live.status_code == 200
        r = await lim.alice.post("/v1/chat/completions", json=_call("x"))
        _refused(r, "1 concurrent generation for user alice")
        await live.aread()
    # Its slot is given back and its tokens (60 out, and the prompt) spent as it closes:
    # the budget is over, for the relay and the chat API alike.
    async with asyncio.timeout(10):
        while (
            r := await lim.alice.post("/v1/chat/completions", json=_call("x"))
        ).status_code != 429:
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.01)
    _refused(r, "30 tokens per day for user alice")
    chat = (await lim.alice.post("/api/chats", json={})).json()["id"]
    _refused(
        await lim.alice.post(f"/api/chats/{chat}/messages", json={"content": "x"}), "30 tokens"
    )
    assert (await lim.bob.post("/v1/chat/completions", json=_call("x"))).status_code == 200


async def test_a_relay_the_client_leaves_gives_its_slot_back(make_limited: MakeLimited) -> None:
    lim = await make_limited(
        LimitsConfig(key=LimitSpec(concurrent_generations=1)), gateway_store=False
    )
    async with lim.alice.stream(
        "POST", "/v1/chat/completions", json=_call(SLOW, stream=True)
    ) as live:
        assert live.status_code == 200
        async for _ in live.aiter_bytes():
            break  # the first chunk, then away
    async with asyncio.timeout(10):
        while (r := await lim.alice.post("/v1/chat/completions", json=_call("x"))).status_code:
            if r.status_code == 200:
                break
            _refused(r, "1 concurrent generation")
            await asyncio.sleep(0.05)


async def test_no_limits_in_the_single_user_default(server: Server) -> None:
    for _ in range(5):
        assert (await server.client.get("/api/chats")).status_code == 200
