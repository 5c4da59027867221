"""`x-request-id`: taken from the request when it is sane, else made; returned always.

`RequestIds` is a pure ASGI middleware (Starlette's `BaseHTTPMiddleware` would run the
app in another task and buffer nothing, but it breaks streaming's disconnect handling).
It sits outside the whole app, so that every response carries the header: errors the
app answers itself, a 500 from Starlette's outermost error middleware, streams. It only
touches the response start; a stream's body messages never pass through it.

It also counts each request on the app's metrics by route template (`scope["route"]`,
set in place by the router when a route matched) and status, once, at its end.
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamkeep.logs import REQUEST_ID

if TYPE_CHECKING:
    from streamkeep.http.metrics import Metrics

HEADER = b"x-request-id"
# What a proxy's or client's id may look like: anything else (too long, spaces,
# control characters, quotes that would break a log line) is replaced by our own.
_SANE = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(scope: Scope) -> str:
    """The request's own `x-request-id` when sane, else a new one (32 hex digits)."""
    for name, value in scope["headers"]:
        if name == HEADER:
            if _SANE.fullmatch(value):
                sane: str = value.decode("ascii")
                return sane
            break
    # Unique, not secret: the Mersenne Twister (no system call, unlike `uuid4()`).
    return f"{random.getrandbits(128):032x}"


class RequestIds:
    """See the module docstring. `metrics`: where requests are counted (optional)."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        header = (HEADER, rid.encode("ascii"))
        status = 500  # what the client gets if the app fails before starting a response
        started = time.perf_counter()

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            REQUEST_ID.reset(token)
            if self.metrics is not None:
                self.metrics.count_request(scope, status, time.perf_counter() - started)
