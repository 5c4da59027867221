"""The HTTP transport every HTTP provider streams through.

`post_stream()` POSTs a JSON body and yields the raw response body as it arrives.
It owns the parts of talking to a vendor that do not depend on its wire format:

- Time limits. `connect` covers opening a new connection (TCP and TLS handshake);
  `first_token` runs from sending the request to the first body byte (it covers a slow
  queue at the vendor); `idle` runs between two body reads. There is deliberately no
  overall read timeout: a long answer is fine as long as it keeps coming.
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

The HTTP client is aiohttp: an answer is one read per token and a busy server holds
hundreds of answers open, so it matters that aiohttp parses HTTP in C and that its pool
does not look at every connection whenever a request starts or ends.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from streamkeep.llm.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
)

__all__ = [
    "RetryPolicy",
    "Timeouts",
    "env_proxy",
    "error_message",
    "get_json",
    "make_client",
    "post_stream",
    "release",
]

logger = logging.getLogger(__name__)

_ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body worth reading
_MESSAGE_LIMIT = 500  # characters of a non-JSON error body kept in the message
# After an answer's end marker, how long (seconds) and how much (bytes) of the body's
# rest is read so its connection can be pooled; the rest usually came in the same packet.
_RELEASE_TIMEOUT = 0.05
_RELEASE_LIMIT = 64 * 1024
_JSON_LIMIT = 8 * 1024 * 1024  # bytes of a looked-up JSON document (a long model list)


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
    # Told of each retry (the provider's name, the error), e.g. to count it.
    on_retry: Callable[[str, ProviderError], None] | None = field(default=None, compare=False)


def make_client(
    *, verify: ssl.SSLContext | bool = True, proxy: str | None = None
) -> aiohttp.ClientSession:
    """A client session fit for many long concurrent streams.

    Call it inside a running event loop (aiohttp binds a session to its loop). Time
    limits are per request (set by `post_stream`), so the session has no read or total
    timeout; the pool is large because each live answer holds a connection.
    `verify` is a context to verify the server with, True for the usual CA
    certificates, or False for no verification; `proxy` an HTTP proxy's URL (see
    `env_proxy`).
    """
    connector = aiohttp.TCPConnector(
        limit=1000,
        limit_per_host=0,
        keepalive_timeout=30.0,
        ssl=_default_ssl_context() if verify is True else verify,
    )
    # Not `trust_env=True`: that looks up proxies and ~/.netrc in worker threads on
    # every request, before the request goes out. `env_proxy` reads them once.
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
        proxy=proxy,
    )


def env_proxy(url: str) -> str | None:
    """The HTTP proxy the environment names for `url`, if any: `HTTPS_PROXY`,
    `HTTP_PROXY` or `ALL_PROXY` (any case) by the URL's scheme, unless `NO_PROXY`
    exempts its host. Only http:// and https:// proxies are taken (aiohttp has no SOCKS).
    """
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and urlsplit(proxy).scheme in ("http", "https"):
        return proxy
    return None


def _default_ssl_context() -> ssl.SSLContext:
    """The system's CA certificates (which honour SSL_CERT_FILE / SSL_CERT_DIR); on a
    system that has none (a slim container), certifi's bundle when it is installed."""
    context = ssl.create_default_context()
    if not context.cert_store_stats()["x509_ca"]:
        try:
            import certifi
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


async def post_stream(
    client: aiohttp.ClientSession,
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
    data = orjson.dumps(json_body)
    request_headers = {
        "content-type": "application/json",
        # No compression. aiohttp would decode it, but an event stream's small events
        # gain little from it, and a compressing server or proxy may hold tokens back in
        # its compressor until a block fills, which is the delay streaming is meant to
        # avoid. (A server that compresses anyway is still decoded.)
        "accept-encoding": "identity",
        **headers,
    }
    # Replaces the session's timeouts as a whole: `connect` bounds the TCP connect and
    # TLS handshake of a new connection; a wait for a free pooled connection and the DNS
    # lookup fall under `first_token` only; there is no read or total limit.
    request_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect)
    attempt = 0
    while True:
        try:
            response, first = await _open(
                client, url, data, request_headers, request_timeout, timeouts, provider
            )
            break
        except ProviderError as exc:
            delay = retry_delay(exc, attempt, retry)
            if delay is None:
                raise
            logger.warning("%s: %s; retry %d in %.2fs", provider, exc, attempt + 1, delay)
            if retry.on_retry is not None:
                retry.on_retry(provider, exc)
            attempt += 1
            await asyncio.sleep(delay)
    content = response.content
    watch = _IdleWatch(timeouts.idle)
    try:
        if not first:
            return  # the body was empty
        yield first
        # The hot path: one read per token, each under the idle time limit.
        while True:
            cancelling = watch.arm()
            try:
                chunk = await content.readany()
            except asyncio.CancelledError:
                if watch.timed_out(cancelling):
                    raise ProviderTimeout(
                        f"no data for {timeouts.idle:g}s mid-stream",
                        phase="idle",
                        provider=provider,
                    ) from None
                raise
            except aiohttp.ClientError as exc:
                raise ProviderConnectionError(
                    f"connection broke mid-stream: {_describe(exc)}", provider=provider
                ) from exc
            finally:
                watch.disarm()
            if not chunk:
                return  # the end of the body
            yield chunk
    finally:
        watch.close()
        _close(response)


async def release(body: AsyncGenerator[bytes, None]) -> None:
    """Read the rest of a finished answer's body, so its connection goes back to the pool.

    A connection closed mid-body cannot be reused: every answer would pay a new TCP
    (and TLS) handshake before its first token. A rest that does not come promptly, or
    is large, or fails, is not waited for: the caller's `aclose()` then drops it.
    (aiohttp pools a connection as soon as the end of its body arrives.)
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
    client: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: dict[str, str],
    request_timeout: aiohttp.ClientTimeout,
    timeouts: Timeouts,
    provider: str,
) -> tuple[aiohttp.ClientResponse, bytes]:
    """Send the request and wait for the first body byte (b"" if the body is empty)."""
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeouts.first_token):
            response = await client.post(
                url,
                data=data,
                headers=headers,
                timeout=request_timeout,
                allow_redirects=False,  # a redirect is reported as an HTTP error
            )
            if not 200 <= response.status < 300:
                raise await _http_error(response, provider)
            first = await response.content.readany()
        return response, first
    except BaseException as exc:
        if response is not None:
            _close(response)
        # Before TimeoutError: aiohttp's connect timeout is a TimeoutError too.
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            raise ProviderTimeout(
                f"could not connect within {timeouts.connect:g}s",
                phase="connect",
                provider=provider,
            ) from exc
        if isinstance(exc, TimeoutError):
            raise ProviderTimeout(
                f"no response within {timeouts.first_token:g}s",
                phase="first_token",
                provider=provider,
            ) from exc
        if isinstance(exc, aiohttp.ClientError):
            error = ProviderConnectionError(_describe(exc), provider=provider)
            if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
                error.retryable = False  # a bad URL will not get any better
            raise error from exc
        raise


def _close(response: aiohttp.ClientResponse) -> None:
    if response.content.is_eof():
        # The whole body arrived: its connection went back to the pool at its end.
        response.release()
    else:
        # An unfinished body: closing drops the connection (it cannot be reused), which
        # is what tells the vendor to stop generating.
        response.close()


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp's own text shows the parser's error with a made-up status 400, which
        # reads like an HTTP error; its message alone says what happened.
        message = getattr(exc.__cause__, "message", None)
        if isinstance(message, str) and message:
            return f"incomplete response body: {message}"
    return str(exc) or type(exc).__name__


async def _http_error(response: aiohttp.ClientResponse, provider: str) -> ProviderHTTPError:
    body = bytearray()
    content = response.content
    while len(body) < _ERROR_BODY_LIMIT:
        chunk = await content.read(_ERROR_BODY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    return ProviderHTTPError(
        error_message(bytes(body)) or response.reason or "",
        status=response.status,
        provider=provider,
        retry_after=parse_retry_after(response.headers),
    )


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


async def get_json(
    client: aiohttp.ClientSession, url: str, *, headers: dict[str, str], provider: str
) -> Any:
    """GET `url` and parse its JSON body: a quick look-up (a model list), never retried;
    the caller bounds it with `asyncio.timeout`. Raises a `ProviderError` subclass, or
    ValueError for a body that is not JSON or is larger than anything looked up."""
    try:
        async with client.get(url, headers={**headers, "accept": "application/json"}) as response:
            if response.status >= 400:
                raise await _http_error(response, provider)
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > _JSON_LIMIT:
                    raise ValueError(f"an answer larger than {_JSON_LIMIT} bytes")
    except aiohttp.ClientError as exc:
        raise ProviderConnectionError(_describe(exc), provider=provider) from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"an answer that is not JSON ({exc})") from None


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


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or HTTP date).

    `headers` must look names up regardless of case, as aiohttp's and multidict's
    `CIMultiDict` do (the names are asked for in lower case).
    """
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
