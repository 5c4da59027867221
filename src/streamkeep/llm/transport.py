"""The HTTP transport every HTTP provider streams through.

`post_stream()` POSTs a JSON body and yields the raw response body as it arrives.
It owns the parts of talking to a vendor that do not depend on its wire format:

- Time limits. `connect` is httpx's; `first_token` runs from sending the request to
  the first body byte (it covers a slow queue at the vendor); `idle` runs between two
  body reads. There is deliberately no overall read timeout: a long answer is fine as
  long as it keeps coming.
- Retries, with exponential backoff and jitter, on 429/5xx, connection failures and
  connect / first-token timeouts, but only before the first body byte was yielded:
  after that the caller has shown text to someone and a retry would repeat it.
  `Retry-After` (seconds or an HTTP date; also OpenAI's `retry-after-ms`) replaces the
  backoff; one longer than `RetryPolicy.max_retry_after` is not waited for at all: the
  error is raised at once with its `retry_after`, for the caller to decide.
- Error mapping onto `streamkeep.llm.errors`: an HTTP error status becomes
  `ProviderHTTPError` with the vendor's own message, a broken connection
  `ProviderConnectionError`, a time limit `ProviderTimeout`.
- Cleanup: closing or cancelling the generator closes the upstream connection at once,
  so a stopped generation stops costing tokens.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from streamkeep.llm.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
)
from streamkeep.llm.netio import use_asyncio_backend

__all__ = [
    "RetryPolicy",
    "Timeouts",
    "error_message",
    "make_client",
    "post_stream",
    "release",
]

log = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body worth reading
_MESSAGE_LIMIT = 500  # characters of a non-JSON error body kept in the message
# After an answer's end marker, how long (seconds) and how much (bytes) of the body's
# rest is read so its connection can be pooled; the rest usually came in the same packet.
_RELEASE_TIMEOUT = 0.05
_RELEASE_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; see the module docstring for what each one measures."""

    connect: float = 10.0
    first_token: float = 120.0
    idle: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After up to this many seconds is waited for; a longer one is not retried.
    max_retry_after: float = 30.0


def make_client(*, verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A client fit for many long concurrent streams.

    Timeouts are per request (set by `post_stream`), so the client's own read timeout
    is off; the pool is large because each live answer holds a connection.
    """
    client = httpx.AsyncClient(
        verify=verify,
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(
            max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30.0
        ),
    )
    use_asyncio_backend(client)  # reads per token without anyio's per-read overhead
    return client


async def post_stream(
    client: httpx.AsyncClient,
    url: str,
    *,
    json_body: dict[str, Any],
    headers: dict[str, str],
    timeouts: Timeouts,
    retry: RetryPolicy,
    provider: str,
) -> AsyncGenerator[bytes, None]:
    """POST `json_body` to `url` and yield the response body bytes as they arrive.

    Raises a `ProviderError` subclass; never retries once a byte was yielded.
    """
    content = orjson.dumps(json_body)
    request_headers = {"content-type": "application/json", **headers}
    attempt = 0
    while True:
        request = client.build_request(
            "POST",
            url,
            content=content,
            headers=request_headers,
            timeout=httpx.Timeout(None, connect=timeouts.connect),
        )
        try:
            response, chunks, first = await _open(client, request, timeouts, provider)
            break
        except ProviderError as exc:
            delay = retry_delay(exc, attempt, retry)
            if delay is None:
                raise
            log.warning("%s: %s; retry %d in %.2fs", provider, exc, attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)
    try:
        if first:
            yield first
        async for chunk in _rest(chunks, timeouts.idle, provider):
            yield chunk
    finally:
        await _close(response, chunks)


async def release(body: AsyncGenerator[bytes, None]) -> None:
    """Read the rest of a finished answer's body, so its connection goes back to the pool.

    A connection closed mid-body cannot be reused: every answer would pay a new TCP
    (and TLS) handshake before its first token. A rest that does not come promptly, or
    is large, or fails, is not waited for: the caller's `aclose()` then drops it.
    """
    received = 0
    try:
        async with asyncio.timeout(_RELEASE_TIMEOUT):
            async for chunk in body:
                received += len(chunk)
                if received > _RELEASE_LIMIT:
                    return
    except (TimeoutError, ProviderError):
        return


async def _open(
    client: httpx.AsyncClient, request: httpx.Request, timeouts: Timeouts, provider: str
) -> tuple[httpx.Response, AsyncIterator[bytes], bytes]:
    """Send the request and wait for the first body byte (or the end of the body)."""
    response: httpx.Response | None = None
    chunks: AsyncIterator[bytes] | None = None
    try:
        async with asyncio.timeout(timeouts.first_token):
            response = await client.send(request, stream=True)
            if not response.is_success:
                raise await _http_error(response, provider)
            chunks = response.aiter_bytes()
            first = await anext(chunks, b"")
        return response, chunks, first
    except BaseException as exc:
        if response is not None:
            await _close(response, chunks)
        if isinstance(exc, TimeoutError):
            raise ProviderTimeout(
                f"no response within {timeouts.first_token:g}s",
                phase="first_token",
                provider=provider,
            ) from exc
        if isinstance(exc, httpx.ConnectTimeout):
            raise ProviderTimeout(
                f"could not connect within {timeouts.connect:g}s",
                phase="connect",
                provider=provider,
            ) from exc
        if isinstance(exc, httpx.TransportError):
            raise ProviderConnectionError(_describe(exc), provider=provider) from exc
        raise


async def _rest(chunks: AsyncIterator[bytes], idle: float, provider: str) -> AsyncIterator[bytes]:
    """The body after its first chunk, each read under the idle time limit."""
    watch = _IdleWatch(idle)
    try:
        while True:
            cancelling = watch.arm()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watch.timed_out(cancelling):
                    raise ProviderTimeout(
                        f"no data for {idle:g}s mid-stream", phase="idle", provider=provider
                    ) from None
                raise
            except httpx.TransportError as exc:
                raise ProviderConnectionError(
                    f"connection broke mid-stream: {_describe(exc)}", provider=provider
                ) from exc
            finally:
                watch.disarm()
            yield chunk
    finally:
        watch.close()


class _IdleWatch:
    """`asyncio.timeout(idle)` around each read of a loop, at one timer per `idle`
    seconds instead of one per read: an answer reads once per token.

    A timer that fires early (the deadline moved on since) re-arms itself; one that
    fires while no read waits (the consumer holds a chunk) lets the next read re-arm.
    Only a waiting read is ever cancelled, as `asyncio.timeout` would.
    """

    __slots__ = ("_deadline", "_expired", "_handle", "_idle", "_loop", "_task")

    def __init__(self, idle: float) -> None:
        self._idle = idle
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None  # the task whose read waits
        self._deadline = 0.0
        self._expired = False

    def arm(self) -> int:
        """Before a read; returns the task's cancel count, for `timed_out`."""
        task = self._task = asyncio.current_task()
        self._deadline = self._loop.time() + self._idle
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._fire)
        return task.cancelling() if task is not None else 0

    def disarm(self) -> None:
        self._task = None

    def timed_out(self, cancelling: int) -> bool:
        """Whether a read's CancelledError is this watch's doing (and no one else's)."""
        task = asyncio.current_task()
        return self._expired and task is not None and task.uncancel() <= cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None:
            return
        if self._loop.time() < self._deadline:
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        self._expired = True
        task.cancel()


async def _close(response: httpx.Response, chunks: AsyncIterator[bytes] | None) -> None:
    # Closing an unfinished response closes its connection rather than pooling it.
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
    await response.aclose()


def _describe(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


async def _http_error(response: httpx.Response, provider: str) -> ProviderHTTPError:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    return ProviderHTTPError(
        error_message(bytes(body)) or response.reason_phrase,
        status=response.status_code,
        provider=provider,
        retry_after=parse_retry_after(response.headers),
    )


def error_message(body: bytes) -> str:
    """The vendor's message from an error body: OpenAI, Anthropic or plain text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        # OpenAI {"error": {"message"}}, Anthropic {"type": "error", "error": {...}},
        # and the simpler shapes some OpenAI-compatible servers use.
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for value in (error, data.get("message"), data.get("detail")):
            if isinstance(value, str) and value:
                return value
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(exc: ProviderError, attempt: int, retry: RetryPolicy) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None to give up."""
    if not exc.retryable or attempt >= retry.max_retries:
        return None
    retry_after = exc.retry_after if isinstance(exc, ProviderHTTPError) else None
    if retry_after is not None:
        return retry_after if retry_after <= retry.max_retry_after else None
    backoff = min(retry.max_delay, retry.base_delay * 2.0**attempt)
    # "Equal jitter": never less than half the backoff, spread over the other half so
    # that many clients failing together do not retry together.
    return backoff / 2 + random.uniform(0, backoff / 2)
