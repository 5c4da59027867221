"""A plain-asyncio network backend for httpcore (the engine under httpx).

Why: httpcore's default backend goes through anyio, which wraps every socket read in a
cancel scope (`fail_after`, even with no timeout) and asks sniffio which event loop
runs. A streamed answer is hundreds of small reads, one per token, and that wrapping
cost more CPU than the HTTP parsing itself. This backend reads straight from an asyncio
`StreamReader`, and only sets up a timer when a read actually has a timeout.

Errors are mapped onto httpcore's exceptions exactly as its anyio backend maps them, so
httpx (and `streamkeep.llm.transport`) see the same `httpx.ConnectError`,
`httpx.ReadTimeout`, ... as before.
"""

# The `timeout` parameters are httpcore's interface, not a choice made here.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx
from httpcore._backends.base import SOCKET_OPTION

__all__ = ["AsyncioBackend", "use_asyncio_backend"]


@contextlib.contextmanager
def _mapped(timeout_error: type[Exception], os_error: type[Exception]) -> Iterator[None]:
    # TimeoutError is an OSError: it must be tested first.
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except (OSError, EOFError, ssl.SSLError) as exc:
        raise os_error(str(exc) or type(exc).__name__) from exc


class AsyncioStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:  # the hot path: no timer, no context manager
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("read timed out") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        # Not waiting for the close to complete: a TLS peer may never answer the
        # close_notify, and a stopped answer must release its caller at once.
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            await self.aclose()
            raise
        return AsyncioStream(self._reader, self._writer)

    def get_extra_info(self, info: str) -> Any:
        writer = self._writer
        if info == "ssl_object":
            return writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return writer.get_extra_info("sockname")
        if info == "server_addr":
            return writer.get_extra_info("peername")
        if info == "socket":
            return writer.get_extra_info("socket")
        if info == "is_readable":
            # The pool asks this of every idle connection whenever a request starts or
            # ends. asyncio's transport reads ahead into the StreamReader, so a peer's
            # close shows there (EOF) and polling the socket would be a wasted syscall.
            reader = self._reader
            return reader.at_eof() or reader.exception() is not None
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local_addr = (local_address, 0) if local_address else None
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=local_addr, **_happy_eyeballs()
                )
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _happy_eyeballs() -> dict[str, Any]:
    """Happy Eyeballs, as anyio does, so an unreachable IPv6 address does not hold a
    connection for the whole connect timeout. uvloop's loop does not take the option."""
    if isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
        return {"happy_eyeballs_delay": 0.25}
    return {}


def _set_options(writer: asyncio.StreamWriter, options: Iterable[SOCKET_OPTION] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in options or ():
        sock.setsockopt(*option)


def use_asyncio_backend(client: httpx.AsyncClient) -> bool:
    """Make `client`'s direct connections use `AsyncioBackend`; True when it did.

    httpx has no public switch for this, so the default transport's pool is reached
    through private attributes, checked first: on an httpx laid out differently, or a
    client going through a proxy, the client keeps httpcore's own backend.
    """
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend()
        return True
    return False
