"""The provider transport over real TLS on loopback (trustme certificates)."""

from __future__ import annotations

import asyncio
import ssl

import trustme
import uvloop

from streamkeep.llm import Accumulator, ChatRequest, Message, ProviderConnectionError
from streamkeep.llm.events import StreamError, TextDelta
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.transport import RetryPolicy, make_client
from tests.fakes.upstream import FakeUpstream, Script


def _tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client that trusts it."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _hello(text: str = "hello tls") -> ChatRequest:
    return ChatRequest("m", [Message("user", text)])


async def _ask(provider: OpenAIProvider) -> Accumulator:
    acc = Accumulator()
    async for event in provider.stream(_hello()):
        acc.add(event)
    return acc


async def test_a_stream_over_tls_arrives_whole() -> None:
    server_ctx, client_ctx = _tls_pair()
    async with FakeUpstream(ssl=server_ctx) as up, make_client(verify=client_ctx) as client:
        up.enqueue(Script(text="secure words arrive in order", delay=0.01))
        provider = OpenAIProvider("tls", up.base_url, client=client)
        result = (await _ask(provider)).result()
    assert up.base_url.startswith("https://")
    assert result.text == "secure words arrive in order"
    assert result.finish_reason == "stop"


async def test_tls_connections_are_reused_and_an_early_close_reaches_the_upstream() -> None:
    # Reuse spares each answer a TLS handshake before its first token.
    server_ctx, client_ctx = _tls_pair()
    async with FakeUpstream(ssl=server_ctx) as up, make_client(verify=client_ctx) as client:
        provider = OpenAIProvider("tls", up.base_url, client=client)
        for _ in range(2):
            assert (await _ask(provider)).result().text == "Hello! You said: hello tls"
        up.enqueue(Script(tokens=1000, delay=0.05))
        stream = provider.stream(_hello())
        assert isinstance(await anext(stream), TextDelta)
        await stream.aclose()  # type: ignore[attr-defined]
        async with asyncio.timeout(5):
            await up.wait_idle()
    assert up.connections == 1
    assert up.closed_by_client == 1


async def test_an_untrusted_certificate_is_a_connection_error_not_a_crash() -> None:
    server_ctx, _ = _tls_pair()
    async with FakeUpstream(ssl=server_ctx) as up:
        # The provider's own session, with the usual CA certificates.
        provider = OpenAIProvider("tls", up.base_url, retry=RetryPolicy(max_retries=0))
        events = [e async for e in provider.stream(_hello("x"))]
        await provider.aclose()
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert isinstance(events[0].error, ProviderConnectionError)
    assert "certificate" in str(events[0].error).lower()
    assert up.requests == []


def test_a_stream_over_tls_under_uvloop() -> None:
    # uvloop has its own TLS implementation; the server runs under it.
    server_ctx, client_ctx = _tls_pair()

    async def main() -> tuple[str, int]:
        async with FakeUpstream(ssl=server_ctx) as up, make_client(verify=client_ctx) as client:
            up.enqueue(Script(text="secure and fast", delay=0.01))
            provider = OpenAIProvider("tls", up.base_url, client=client)
            text = (await _ask(provider)).result().text
            up.enqueue(Script(tokens=1000, delay=0.05))
            stream = provider.stream(_hello())
            assert isinstance(await anext(stream), TextDelta)
            await stream.aclose()  # type: ignore[attr-defined]
            async with asyncio.timeout(5):
                await up.wait_idle()
            return text, up.closed_by_client

    assert uvloop.run(main()) == ("secure and fast", 1)
