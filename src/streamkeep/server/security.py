"""Whom the server answers, and the headers that keep its page to itself.

With no login, a server on loopback answers any page the user's browser opens. Two
checks on the request start keep other sites out (never per streamed frame: the Guard
only amends the response start, so a stream's body may skip it, see `server.app.App`):

- `Host`. A DNS-rebinding page (evil.example, resolved to 127.0.0.1 after it loaded)
  reaches the server under its own name, same-origin for the browser. Answered are the
  loopback names, the configured listen host, any IP address (a rebinding needs a name),
  and `allowed_hosts` (`*.example.com` covers its subdomains, `*` everything); anything
  else is a 400 `invalid_host` (no `Host` at all, HTTP/1.0, is not a browser's and
  passes). Listening on 0.0.0.0 or :: names no host, so there a name other than a
  loopback one (the machine's, a load balancer's) must be listed.
  (Starlette's TrustedHostMiddleware has no IP rule and answers in plain text.)
- `Origin` on a request that changes something (POST, PATCH, DELETE, PUT). A form or a
  `text/plain` fetch from any site needs no CORS preflight and would start replies on
  the user's provider keys. A browser names the page's origin on those: it must be the
  server's own (the origin's host and port are the `Host`'s), else a 403 `cross_origin`.
  Programs send no `Origin` and are not affected. `allowed_hosts = ["*"]` turns both
  checks off.

Every response carries `nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy:
no-referrer` and one Content-Security-Policy, which lets the page and /docs load only
this server's own scripts, styles and API, and nothing inline.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamkeep.server.errors import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# Listen addresses that mean "every interface": they name no host to answer to.
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": "80", "https": "443"}

# What the page uses: its own ES modules, stylesheet and API (fetch, and the images
# messages carry), `data:` images (a favicon, attachments not sent yet);
# nothing inline, no frames, no form posts. /docs (Swagger UI, `server.docs`) needs
# the same, and the `data:` SVG icons of its stylesheet.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
]

# Host header values seen to be allowed (a few at most: names with their ports).
_CACHE_LIMIT = 64


def split_authority(authority: str) -> tuple[str, str] | None:
    """`name[:port]` or `[v6][:port]` -> (lower-case name without brackets or a final
    dot, port or ""); None when it is malformed."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        name, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = authority.partition(":")
        if ":" in port:
            return None  # an IPv6 address without brackets
    if port and not port.isdigit():
        return None
    name = name.removesuffix(".")
    return (name, port) if name else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which `Host` names the server answers (see the module's docstring)."""

    def __init__(self, listen_host: str, allowed_hosts: Iterable[str]) -> None:
        names = set(LOOPBACK_NAMES)
        listen = listen_host.strip().strip("[]").lower()
        if listen not in ANY_ADDRESS:
            names.add(listen)
        self.allow_all = False
        suffixes: list[str] = []
        for entry in allowed_hosts:
            entry = entry.strip().lower()
            if entry == "*":
                self.allow_all = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:])  # ".example.com"
            elif entry:
                names.add(entry.strip("[]").removesuffix("."))
        self.names = frozenset(names)
        self.suffixes = tuple(suffixes)

    def allows(self, name: str) -> bool:
        return (
            self.allow_all
            or name in self.names
            or name.endswith(self.suffixes)
            or _is_ip(name)  # no DNS rebinding without a name
        )


class Guard:
    """ASGI middleware: the `Host` and `Origin` checks, and the security headers."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy
        self._allowed: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in HEADERS if h[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        refusal = None if self.policy.allow_all else self._refusal(scope)
        if refusal is not None:
            status, kind, text = refusal
            await error_response(status, kind, text)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        host = origin = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"origin":
                origin = value
        if host is None:
            # HTTP/1.0 without Host (an old health probe): not a browser, so no rebinding.
            if origin is None:
                return None
            return 403, "cross_origin", "a request with an Origin must name its Host"
        if host not in self._allowed:
            parsed = split_authority(host.decode("latin-1"))
            if parsed is None or not self.policy.allows(parsed[0]):
                shown = host.decode("latin-1")[:100]
                return 400, "invalid_host", f"this server does not answer to Host {shown!r}"
            if len(self._allowed) < _CACHE_LIMIT:
                self._allowed.add(host)
        if (
            origin is not None
            and scope["method"] not in SAFE_METHODS
            and not same_origin(origin.decode("latin-1"), host.decode("latin-1"))
        ):
            return 403, "cross_origin", "requests from another site's pages are refused"
        return None


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's `Origin` (scheme://name[:port]) names the `Host` it sent to;
    the port a browser leaves out is its scheme's default, in both."""
    scheme, sep, authority = origin.partition("://")
    default = DEFAULT_PORTS.get(scheme.lower())
    if not sep or default is None:
        return False  # "null" (a sandboxed or file: page), or not a web origin
    theirs, ours = split_authority(authority), split_authority(host)
    if theirs is None or ours is None:
        return False
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)
