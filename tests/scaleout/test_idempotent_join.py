"""A same-key retry of a stream-starting POST that lands on another worker joins the
running generation (served from Redis, like a cross-worker resume) instead of a 409.

Two real uvicorn servers of this event loop on different loopback ports, sharing one
PostgreSQL database and Redis (under the test's own key prefix), and the fake upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from tests.conftest import TEST_REDIS_URL
from tests.fakes.upstream import FakeUpstream
from tests.server.conftest import make_settings, start_server, stop_server
from tests.server.sse import Event, events, text_of, until

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

TOKENS = 40
SLOW = f"[[tokens={TOKENS} delay=0.05]] hi"


@asynccontextmanager
async def worker(
    home: Path, upstream: FakeUpstream, pg_url: str, keys: Keys
) -> AsyncIterator[httpx.AsyncClient]:
    """A server in the cluster, and a client of it."""
    settings = make_settings(
        home,
        upstream.base_url,
        database_url=pg_url,
        redis_url=TEST_REDIS_URL,
        redis_prefix=keys.prefix,
        checkpoint_interval=0.2,
    )
    running = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            yield client
    finally:
        await stop_server(running)


@asynccontextmanager
async def two_workers(
    tmp_path: Path, upstream: FakeUpstream, pg_url: str, keys: Keys
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        worker(tmp_path / "a", upstream, pg_url, keys) as a,
        worker(tmp_path / "b", upstream, pg_url, keys) as b,
    ):
        yield a, b


async def new_chat(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/chats", json={})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def keyed(key: str, **extra: str) -> dict[str, str]:
    return {"idempotency-key": key, **extra}


def check_whole(stream: list[Event], message_id: str) -> None:
    """A whole reply: `start` to `[DONE]`, ids counting on by one, every token."""
    assert stream[0].type == "start" and stream[0].data["messageId"] == message_id
    assert [e.type for e in stream][-2:] == ["finish", "[DONE]"]
    first = stream[0].seq
    assert first is not None
    assert [e.seq for e in stream] == list(range(first, first + len(stream)))
    assert len(text_of(stream).split()) == TOKENS


async def test_a_same_key_retry_on_another_worker_joins_the_running_reply(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    async with two_workers(tmp_path, fake_upstream, pg_url, keys) as (a, b):
        chat_id = await new_chat(a)
        path = f"/api/chats/{chat_id}/messages"
        body = {"content": SLOW}
        async with a.stream("POST", path, json=body, headers=keyed("k")) as ra:
            assert ra.status_code == 200
            mid = ra.headers["x-streamkeep-message-id"]
            on_a = events(ra)
            seen = [e for _ in range(3) for e in await until(on_a, "text-delta")]

            # Another key while it runs: refused, as today.
            other = await b.post(path, json=body, headers=keyed("other"))
            assert other.status_code == 409
            assert other.json()["error"]["running"] is True
            assert other.json()["error"]["message_id"] == mid
            # ...and that refused start left the chat pointing at a's reply: a resume
            # through b follows it, not the start b never kept.
            resume = f"/api/chats/{chat_id}/stream?after=0"
            async with b.stream("GET", resume) as resumed:
                assert resumed.status_code == 200
                assert resumed.headers["x-streamkeep-message-id"] == mid

            asked = len(fake_upstream.requests)
            async with b.stream("POST", path, json=body, headers=keyed("k")) as rb:
                assert rb.status_code == 200, await rb.aread()
                assert rb.headers["x-streamkeep-message-id"] == mid
                assert rb.headers["x-streamkeep-chat-id"] == chat_id
                joined = [e async for e in events(rb)]
            seen += [e async for e in on_a]

        check_whole(joined, mid)
        assert joined == seen  # the same stream, from its start
        message = (await b.get(f"/api/messages/{mid}")).json()
        assert message["status"] == "complete"
        assert message["parts"][0]["text"] == text_of(joined)
        assert len(fake_upstream.requests) == asked  # the join did not reach the provider

        # After the reply ended, the same key on b names the stored answer.
        late = await b.post(path, json=body, headers=keyed("k"))
        assert late.status_code == 409
        error: dict[str, Any] = late.json()["error"]
        assert error["type"] == "generation_conflict"
        assert error["running"] is False and error["message_id"] == mid


async def test_a_retry_on_another_worker_joins_after_its_last_event_id(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    async with two_workers(tmp_path, fake_upstream, pg_url, keys) as (a, b):
        chat_id = await new_chat(a)
        async with a.stream(
            "POST", f"/api/chats/{chat_id}/messages", json={"content": "[[tokens=3]] one"}
        ) as r:
            first = [e async for e in events(r)]
        first_end = first[-1].seq
        assert first_end is not None

        # useChat's endpoint: the key, and where the dropped client stopped.
        body = {
            "id": chat_id,
            "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": SLOW}]}],
        }
        async with a.stream("POST", "/api/chat", json=body, headers=keyed("k2")) as ra:
            assert ra.status_code == 200
            mid = ra.headers["x-streamkeep-message-id"]
            on_a = events(ra)
            seen = [e for _ in range(5) for e in await until(on_a, "text-delta")]
            last = seen[-1].seq
            assert last is not None
            headers = keyed("k2", **{"last-event-id": str(last)})
            async with b.stream("POST", "/api/chat", json=body, headers=headers) as rb:
                assert rb.status_code == 200, await rb.aread()
                assert rb.headers["x-streamkeep-message-id"] == mid
                rest = [e async for e in events(rb)]
            seen += [e async for e in on_a]
        check_whole(seen, mid)
        assert seen[0].seq is not None and seen[0].seq > first_end  # ids count on
        assert rest == seen[len(seen) - len(rest) :] and rest[0].seq == last + 1
        assert [r["messages"][-1]["content"] for r in fake_upstream.requests].count(SLOW) == 1


async def test_a_same_key_regenerate_on_another_worker_joins(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    async with two_workers(tmp_path, fake_upstream, pg_url, keys) as (a, b):
        chat_id = await new_chat(a)
        async with a.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": SLOW}) as r:
            answer = r.headers["x-streamkeep-message-id"]
            [e async for e in events(r)]
        path = f"/api/messages/{answer}/regenerate"
        async with a.stream("POST", path, headers=keyed("again")) as ra:
            assert ra.status_code == 200
            mid = ra.headers["x-streamkeep-message-id"]
            on_a = events(ra)
            seen = await until(on_a, "text-delta")
            async with b.stream("POST", path, headers=keyed("again")) as rb:
                assert rb.status_code == 200, await rb.aread()
                assert rb.headers["x-streamkeep-message-id"] == mid
                joined = [e async for e in events(rb)]
            seen += [e async for e in on_a]
        check_whole(joined, mid)
        assert joined == seen
        assert len(fake_upstream.requests) == 2  # the first reply, and one regeneration
