"""The HTTP transport against the fake upstream: bytes, faults, retries, cleanup."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import uvloop
from multidict import CIMultiDict

from streamkeep.llm.errors import (
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderTimeout,
)
from streamkeep.llm.transport import (
    RetryPolicy,
    Timeouts,
    env_proxy,
    error_message,
    make_client,
    parse_retry_after,
    post_stream,
)
from tests.fakes.upstream import FakeUpstream, Script

FAST_RETRY = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.01)
NO_RETRY = RetryPolicy(max_retries=0)
SHORT = Timeouts(connect=2.0, first_token=0.3, idle=0.3)
BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_client() as c:
        yield c


def stream(
    client: aiohttp.ClientSession,
    url: str,
    *,
    timeouts: Timeouts = SHORT,
    retry: RetryPolicy = FAST_RETRY,
    body: dict[str, Any] | None = None,
) -> AsyncIterator[bytes]:
    return post_stream(
        client,
        url,
        json_body=body or BODY,
        headers={"authorization": "Bearer k"},
        timeouts=timeouts,
        retry=retry,
        provider="fake",
    )


def chat_url(up: FakeUpstream) -> str:
    return up.base_url + "/chat/completions"


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_streams_the_body_and_sends_body_and_headers(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(text="one two three"))
    body = await collect(stream(client, chat_url(fake_upstream)))
    assert body.count(b"data: ") == 6  # role, 3 words, finish, [DONE]
    assert b'"content":" three"' in body
    assert body.endswith(b"data: [DONE]\n\n")
    assert fake_upstream.requests == [BODY]
    assert fake_upstream.request_headers[0]["authorization"] == "Bearer k"
    assert fake_upstream.request_headers[0]["content-type"] == "application/json"
    assert fake_upstream.request_headers[0]["accept-encoding"] == "identity"


async def test_raw_pieces_arrive_unchanged(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    raw = [b'data: {"a":', b"1}\n\n", b": comment\n\ndata: [DONE]\n\n"]
    fake_upstream.enqueue(Script(raw=raw))
    assert await collect(stream(client, chat_url(fake_upstream))) == b"".join(raw)


async def test_client_error_is_raised_with_the_vendor_message_and_not_retried(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(status=400))
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(stream(client, chat_url(fake_upstream)))
    assert caught.value.status == 400
    assert caught.value.provider_message == "fake upstream error 400"
    assert caught.value.provider == "fake"
    assert len(fake_upstream.requests) == 1


async def test_anthropic_error_body_message_is_extracted(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(status=401))
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(stream(client, fake_upstream.root_url + "/v1/messages"))
    assert caught.value.status == 401
    assert caught.value.provider_message == "fake upstream error 401"


async def test_server_error_is_retried_then_succeeds(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(status=503))
    fake_upstream.enqueue(Script(status=500))
    fake_upstream.enqueue(Script(text="finally"))
    body = await collect(stream(client, chat_url(fake_upstream)))
    assert b'"content":"finally"' in body
    assert len(fake_upstream.requests) == 3


async def test_retries_are_limited_and_the_last_error_is_raised(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    for _ in range(4):
        fake_upstream.enqueue(Script(status=429, retry_after=0.01))
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(stream(client, chat_url(fake_upstream)))
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(0.01)
    assert len(fake_upstream.requests) == 3  # the first try and max_retries=2


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(status=429, retry_after=3600))
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(stream(client, chat_url(fake_upstream)))
    assert caught.value.retry_after == 3600
    assert len(fake_upstream.requests) == 1


async def test_connection_dropped_before_the_first_byte_is_retried(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(fail_after=0, tokens=3))
    fake_upstream.enqueue(Script(text="second"))
    body = await collect(stream(client, chat_url(fake_upstream)))
    assert b'"content":"second"' in body
    assert len(fake_upstream.requests) == 2


async def test_connection_dropped_mid_body_is_not_retried(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(text="a b c d", fail_after=2))
    received = bytearray()
    with pytest.raises(ProviderConnectionError):
        async for chunk in stream(client, chat_url(fake_upstream)):
            received += chunk
    assert b'"content":" b"' in received
    assert b'"content":" c"' not in received
    assert len(fake_upstream.requests) == 1


async def test_an_invalid_url_is_a_connection_error_that_is_not_retried(
    client: aiohttp.ClientSession,
) -> None:
    with pytest.raises(ProviderConnectionError) as caught:
        await collect(stream(client, "http://127.0.0.1:99999/v1/chat/completions"))
    assert not caught.value.retryable


async def test_an_empty_body_yields_nothing_and_keeps_the_connection(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(raw=[]))
    assert await collect(stream(client, chat_url(fake_upstream))) == b""
    await collect(stream(client, chat_url(fake_upstream)))
    assert fake_upstream.connections == 1


async def test_nothing_listening_is_a_connection_error(client: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with pytest.raises(ProviderConnectionError):
            await collect(stream(client, f"http://127.0.0.1:{port}/v1/chat/completions"))


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection's SYN goes unanswered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)  # let the handshakes that will complete, complete
    yield port
    for filler in fillers:
        filler.close()
    server.close()


async def test_connect_timeout(client: aiohttp.ClientSession, unaccepting_port: int) -> None:
    timeouts = Timeouts(connect=0.2, first_token=30.0, idle=30.0)
    url = f"http://127.0.0.1:{unaccepting_port}/v1/chat/completions"
    with pytest.raises(ProviderTimeout) as caught:
        await collect(stream(client, url, timeouts=timeouts, retry=NO_RETRY))
    assert caught.value.phase == "connect"


async def test_first_token_timeout_while_waiting_for_headers_is_retried(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(hang_before_first_byte=30))
    fake_upstream.enqueue(Script(hang_before_first_byte=30))
    retry = RetryPolicy(max_retries=1, base_delay=0.001)
    with pytest.raises(ProviderTimeout) as caught:
        await collect(stream(client, chat_url(fake_upstream), retry=retry))
    assert caught.value.phase == "first_token"
    assert len(fake_upstream.requests) == 2


async def test_first_token_timeout_counts_until_the_first_body_byte(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    # hang_after=0: headers go out, then nothing; still a first-token timeout.
    fake_upstream.enqueue(Script(hang_after=0))
    with pytest.raises(ProviderTimeout) as caught:
        await collect(stream(client, chat_url(fake_upstream), retry=NO_RETRY))
    assert caught.value.phase == "first_token"


async def test_idle_timeout_mid_body_is_not_retried_and_closes_upstream(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(tokens=5, hang_after=2))
    with pytest.raises(ProviderTimeout) as caught:
        await collect(stream(client, chat_url(fake_upstream)))
    assert caught.value.phase == "idle"
    assert len(fake_upstream.requests) == 1
    async with asyncio.timeout(5):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_aclose_closes_the_upstream_connection(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(tokens=5, hang_after=2))
    chunks = post_stream(
        client,
        chat_url(fake_upstream),
        json_body=BODY,
        headers={},
        timeouts=Timeouts(),
        retry=FAST_RETRY,
        provider="fake",
    )
    assert (await anext(chunks)).startswith(b"data: ")
    assert fake_upstream.open_streams == 1
    await chunks.aclose()
    async with asyncio.timeout(5):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    fake_upstream.enqueue(Script(tokens=5, hang_after=2))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream(client, chat_url(fake_upstream), timeouts=Timeouts()):
            first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_connection_is_reused_after_a_complete_stream(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        await collect(stream(client, chat_url(fake_upstream)))
    assert fake_upstream.connections == 1


def test_error_message_shapes() -> None:
    assert error_message(b'{"error": {"message": "bad key", "type": "x"}}') == "bad key"
    assert (
        error_message(
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
        )
        == "Overloaded"
    )
    assert error_message(b'{"error": "model not found"}') == "model not found"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    long = error_message(b"x" * 2000)
    assert long.endswith("...") and len(long) < 600


def test_retry_after_forms() -> None:
    assert parse_retry_after(CIMultiDict({"retry-after": "2"})) == 2.0
    assert parse_retry_after(CIMultiDict({"Retry-After": "3"})) == 3.0  # any case
    assert parse_retry_after(CIMultiDict({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(CIMultiDict({})) is None
    assert parse_retry_after(CIMultiDict({"retry-after": "soon"})) is None
    future = email.utils.formatdate(time.time() + 100, usegmt=True)
    seconds = parse_retry_after(CIMultiDict({"retry-after": future}))
    assert seconds is not None and 90 < seconds <= 100
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert parse_retry_after(CIMultiDict({"retry-after": past})) == 0.0


def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert env_proxy("https://api.openai.com/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.example.org")
    assert env_proxy("https://api.openai.com/v1/chat/completions") == "http://proxy.internal:3128"
    assert env_proxy("http://api.openai.com/v1") is None  # no HTTP_PROXY
    assert env_proxy("https://llm.example.org/v1") is None
    assert env_proxy("http://localhost:8080/v1") is None
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    assert env_proxy("http://api.openai.com/v1") is None  # no SOCKS in aiohttp


async def test_a_directive_in_the_last_user_message_scripts_the_fake(
    fake_upstream: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    body = {
        "stream": True,
        "messages": [
            {"role": "user", "content": "[[tokens=50]] an older turn"},
            {"role": "user", "content": 'go [[text="Hi there" fail_after=1]]'},
        ],
    }
    received = bytearray()
    with pytest.raises(ProviderConnectionError):
        async for chunk in stream(client, chat_url(fake_upstream), body=body):
            received += chunk
    assert b'"content":"Hi"' in received
    assert b'"content":" there"' not in received


def test_streams_and_closes_under_uvloop() -> None:
    # The server runs under uvloop (uvicorn[standard]), whose loop takes fewer options
    # than asyncio's (no happy_eyeballs_delay in create_connection, for one).
    async def main() -> tuple[bytes, int, int]:
        async with FakeUpstream() as up, make_client() as client:
            up.enqueue(Script(text="one two three", delay=0.01))
            up.enqueue(Script(tokens=5, hang_after=2))
            body = await collect(stream(client, chat_url(up)))
            chunks = stream(client, chat_url(up), timeouts=Timeouts())
            assert (await anext(chunks)).startswith(b"data: ")
            await chunks.aclose()
            async with asyncio.timeout(5):
                await up.wait_idle()
            return body, up.closed_by_client, up.connections

    body, closed_by_client, connections = uvloop.run(main())
    assert b'"content":" three"' in body and body.endswith(b"data: [DONE]\n\n")
    assert closed_by_client == 1
    assert connections == 1  # the second request reused the first one's connection
