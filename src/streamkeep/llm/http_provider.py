"""What every HTTP provider shares: the connection settings and the stream loop.

A vendor adapter supplies only its URL and headers, its request body and a parser of
its response bytes (a `StreamParser`); this class POSTs through `transport.post_stream`,
feeds the parser, reports provider faults as a `StreamError` and always closes the
upstream connection (at once when the consumer stops or is cancelled). A body that ends
(or breaks) before the provider said the answer is finished ends with a `StreamError`:
the parser's `close()` says so, or its `broke_off()` with the transport's error.

Without a session passed in, a provider makes its own on its first `stream()` (aiohttp
binds a session to the running event loop, and providers are often built outside one),
going through the proxy the environment names for its URL, if any.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from streamkeep.llm.errors import ProviderError
from streamkeep.llm.events import StreamEvent
from streamkeep.llm.parser import StreamParser
from streamkeep.llm.transport import (
    RetryPolicy,
    Timeouts,
    env_proxy,
    make_client,
    post_stream,
    release,
)
from streamkeep.llm.types import ChatRequest


class HTTPProvider:
    """Base of the HTTP providers; subclasses implement `_body` and `_parser`."""

    def __init__(
        self,
        name: str,
        url: str,
        headers: dict[str, str],
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._headers = headers
        self._timeouts = timeouts or Timeouts()
        self._retry = retry or RetryPolicy()
        # A session passed in belongs to the caller: `aclose()` leaves it open.
        self._owns_client = client is None
        self._client = client

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _parser(self) -> StreamParser:
        raise NotImplementedError

    def open(self) -> aiohttp.ClientSession:
        """The session, made now if this provider makes its own (inside a running loop)."""
        client = self._client
        if client is None:
            client = self._client = make_client(proxy=env_proxy(self._url))
        return client

    async def stream(self, request: ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        parser = self._parser()
        client = self.open()
        upstream = post_stream(
            client,
            self._url,
            json_body=self._body(request),
            headers=self._headers,
            timeouts=self._timeouts,
            retry=self._retry,
            provider=self.name,
        )
        try:
            async for data in upstream:
                events = parser.feed(data)
                if parser.done:
                    # Before the last events: a consumer may stop reading at Finish, and
                    # a fully read response returns its connection to the pool.
                    await release(upstream)
                for event in events:
                    yield event
                if parser.done:
                    return  # `finally` closes the connection
            for event in parser.close():
                yield event
        except ProviderError as exc:
            for event in parser.broke_off(exc):
                yield event
        finally:
            await upstream.aclose()

    async def aclose(self) -> None:
        """Close the session this provider made (a later `stream()` makes a new one)."""
        client = self._client
        if self._owns_client and client is not None:
            self._client = None
            await client.close()
