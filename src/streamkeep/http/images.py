"""Images in, from any API: a data URI, base64 with a type, or (when allowed) a URL.

`image_from_source` turns what a request gives into a checked `Image` (nothing stored);
`store_image` stores one and gives the message part that refers to it. Every API (the
chat API, `/v1/chat/completions`, `/v1/messages`, and the Responses API's
`input_image`) goes through them, so each checks images alike: type by magic bytes,
`max_image_bytes`, and URLs fetched only when `fetch_image_urls` is on.

A URL is fetched without redirects, within `FETCH_TIMEOUT` and `max_image_bytes`, and
never from a private, loopback, link-local or otherwise non-global address (checked on
the addresses the connection really uses, after DNS), unless its host is listed in
`image_url_hosts_allowed`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from streamkeep.store.errors import ImageRejected, ImageTooLarge
from streamkeep.store.images import Image, image_from_bytes, image_from_data_uri

if TYPE_CHECKING:
    from streamkeep.config import Settings
    from streamkeep.store import ChatStore

#: seconds a URL's image may take to arrive, whole
FETCH_TIMEOUT = 10.0


async def image_from_source(source: str, settings: Settings) -> Image:
    """The checked image a `data:` URI or an http(s) URL gives; ImageRejected (or a
    subclass: 413, 415) when it cannot be taken. Writes nothing."""
    if source[:5].lower() == "data:":
        return image_from_data_uri(source, settings.max_image_bytes)
    scheme = urlsplit(source).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRejected("an image must be a data: URI or an http(s) URL")
    if not settings.fetch_image_urls:
        raise ImageRejected(
            "image URLs are not fetched on this server (setting `fetch_image_urls` is "
            "off); send the image as a data: URI (data:image/png;base64,...)"
        )
    return await fetch_image(source, settings)


def check_count(count: int, settings: Settings) -> None:
    """ImageRejected for more images than one message may carry."""
    if count > settings.max_images_per_message:
        raise ImageRejected(
            f"a message may carry at most {settings.max_images_per_message} images, not {count}"
        )


async def store_image(store: ChatStore, image: Image, owner: str | None) -> dict[str, Any]:
    """Store `image` (once per content) for `owner` (None: auth is off); the message
    part that refers to it."""
    await store.save_images([image], owner)
    return image.part()


async def fetch_image(url: str, settings: Settings) -> Image:
    """The image at `url` (see the module docstring for what is refused)."""
    host = urlsplit(url).hostname or ""
    allowed = host.lower() in (h.lower() for h in settings.image_url_hosts_allowed)
    if not allowed:
        _check_literal(host)
    resolver = _PublicResolver(allowed)
    limit = settings.max_image_bytes
    try:
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            if response.status != 200:
                raise ImageRejected(f"fetching the image URL answered HTTP {response.status}")
            if (response.content_length or 0) > limit:
                raise ImageTooLarge(f"the image at the URL is over {limit} bytes, the most taken")
            data = await response.content.read(limit + 1)
            claimed = response.headers.get("content-type", "").split(";")[0].strip() or None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        if resolver.refused is not None:
            raise ImageRejected(
                f"image URL refused: {host!r} resolves to {resolver.refused}, a private "
                "or local address"
            ) from None
        raise ImageRejected(f"the image URL could not be fetched ({type(exc).__name__})") from None
    return image_from_bytes(data, limit, claimed=claimed)


def _check_literal(host: str) -> None:
    """An IP-literal host is not resolved (aiohttp connects to it as it is)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not address.is_global:
        raise ImageRejected(f"image URL refused: {host!r} is a private or local address")


class _Refused(OSError):
    pass


class _PublicResolver(AbstractResolver):
    """DNS that refuses a name resolving to any non-global address (so a name cannot
    point the server at itself or its network), unless the host is allowed."""

    def __init__(self, allowed: bool) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed
        self.refused: str | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if not self._allowed:
            for result in found:
                if not ipaddress.ip_address(result["host"]).is_global:
                    self.refused = result["host"]
                    raise _Refused(f"{host} resolves to a private address")
        return found

    async def close(self) -> None:
        await self._inner.close()


async def images_in(sources: Sequence[str], settings: Settings) -> list[Image]:
    """The checked images of a message's sources, at most `max_images_per_message`."""
    check_count(len(sources), settings)
    return list(await asyncio.gather(*(image_from_source(s, settings) for s in sources)))
