"""The asyncio network backend under httpx: installed, and correct over real TLS."""

from __future__ import annotations

import ssl

import trustme

from streamkeep.llm import Accumulator, ChatRequest, Message, ProviderConnectionError
from streamkeep.llm.events import StreamError
from streamkeep.llm.netio import use_asyncio_backend
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


async def _ask(provider: OpenAIProvider) -> Accumulator:
    acc = Accumulator()
    async for event in provider.stream(ChatRequest("m", [Message("user", "hello tls")])):
        acc.add(event)
    await provider.aclose()
    return acc


def test_make_client_reads_through_the_asyncio_backend() -> None:
    # A fallback to httpcore's anyio backend would silently cost the per-token savings.
    assert use_asyncio_backend(make_client()) is True


async def test_a_stream_over_tls_arrives_whole() -> None:
    server_ctx, client_ctx = _tls_pair()
    async with FakeUpstream(ssl=server_ctx) as up:
        up.enqueue(Script(text="secure words arrive in order", delay=0.01))
        provider = OpenAIProvider("tls", up.base_url, client=make_client(verify=client_ctx))
        result = (await _ask(provider)).result()
    assert up.base_url.startswith("https://")
    assert result.text == "secure words arrive in order"
    assert result.finish_reason == "stop"


async def test_an_untrusted_certificate_is_a_connection_error_not_a_crash() -> None:
    server_ctx, _ = _tls_pair()
    async with FakeUpstream(ssl=server_ctx) as up:
        provider = OpenAIProvider(
            "tls", up.base_url, client=make_client(), retry=RetryPolicy(max_retries=0)
        )
        events = [e async for e in provider.stream(ChatRequest("m", [Message("user", "x")]))]
        await provider.aclose()
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert isinstance(events[0].error, ProviderConnectionError)
    assert up.requests == []
