"""Images messages carry: checked, stored once by content, read back by their owners.

An image is known by the SHA-256 of its bytes; a message part refers to it as the AI
SDK's file part `{"type": "file", "mediaType": "image/png", "url": "/api/images/<sha256>"}`.
Its type is what its first bytes say (PNG, JPEG, GIF or WebP), never what a client
claims. `image_owners` records the users who sent it in: they may read it back. With
auth off nobody is recorded, and everyone (there is only one user) reads every image.

Checking (`image_from_bytes`, `image_from_data_uri`) writes nothing; `save_images`
writes after every check of a request passed, so a refused request stores nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from streamkeep.store.errors import ImageRejected, ImageTooLarge, UnsupportedImageType
from streamkeep.store.models import IMAGE_OWNERS, IMAGES

if TYPE_CHECKING:
    from collections.abc import Callable

    from streamkeep.store.db import Database

#: where a stored image is served (the chat API's `GET /api/images/{sha256}`)
IMAGE_URL_PREFIX = "/api/images/"
MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_SHA = re.compile(r"[0-9a-f]{64}")
_DATA_URI = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Image:
    sha256: str
    media_type: str
    data: bytes

    @property
    def url(self) -> str:
        return IMAGE_URL_PREFIX + self.sha256

    def part(self) -> dict[str, Any]:
        """The stored message part that refers to it."""
        return {"type": "file", "mediaType": self.media_type, "url": self.url}


def sniff(data: bytes) -> str | None:
    """The image type the bytes start with (one of MEDIA_TYPES), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_from_bytes(data: bytes, max_bytes: int, *, claimed: str | None = None) -> Image:
    """The image of `data`: ImageRejected when empty, ImageTooLarge over `max_bytes`,
    UnsupportedImageType for a claimed non-image type or bytes of no image type taken."""
    if claimed is not None and not claimed.lower().startswith("image/"):
        raise UnsupportedImageType(f"{claimed[:60]!r} is not an image type; {_TAKEN}")
    if not data:
        raise ImageRejected("the image is empty")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; at most {max_bytes} are taken")
    media_type = sniff(data)
    if media_type is None:
        raise UnsupportedImageType(f"the data is not an image of a type taken; {_TAKEN}")
    return Image(hashlib.sha256(data).hexdigest(), media_type, data)


def image_from_data_uri(uri: str, max_bytes: int) -> Image:
    """The image of a `data:<type>;base64,<data>` URI (see `image_from_bytes`)."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ImageRejected("an image must be a data: URI (data:image/png;base64,...)")
    params = [p.strip().lower() for p in match.group(2).split(";") if p.strip()]
    if "base64" not in params:
        raise ImageRejected("an image data: URI must be base64 (data:image/png;base64,...)")
    return image_from_base64(uri[match.end() :], max_bytes, claimed=match.group(1) or None)


def image_from_base64(text: str, max_bytes: int, *, claimed: str | None = None) -> Image:
    """The image of base64 text (see `image_from_bytes`); too long text is refused
    before it is decoded."""
    if len(text) // 4 * 3 > max_bytes + 3:
        raise ImageTooLarge(f"the image is over {max_bytes} bytes; at most {max_bytes} are taken")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("the image's base64 data cannot be decoded") from None
    return image_from_bytes(data, max_bytes, claimed=claimed)


def image_sha(part: Any) -> str | None:
    """The SHA-256 a stored file part refers to (None: not a stored image's part)."""
    if not isinstance(part, dict) or part.get("type") != "file":
        return None
    url = part.get("url")
    if not isinstance(url, str) or not url.startswith(IMAGE_URL_PREFIX):
        return None
    sha = url[len(IMAGE_URL_PREFIX) :]
    return sha if _SHA.fullmatch(sha) else None


_TAKEN = "taken: " + ", ".join(MEDIA_TYPES)
_i, _o = IMAGES.c, IMAGE_OWNERS.c
_INSERT_IMAGE = insert(IMAGES)
_INSERT_OWNER = insert(IMAGE_OWNERS)
_HAS_IMAGE = select(_i.sha256).where(_i.sha256 == bindparam("b_sha"))
_HAS_OWNER = select(_o.sha256).where(
    _o.sha256 == bindparam("b_sha"), _o.user_id == bindparam("b_user")
)
_READ = select(_i.sha256, _i.media_type, _i.data).where(_i.sha256 == bindparam("b_sha"))
_READ_OWNED = _READ.join_from(IMAGES, IMAGE_OWNERS, _o.sha256 == _i.sha256).where(
    _o.user_id == bindparam("b_user")
)


class Images:
    """The images part of `ChatStore`."""

    _db: Database
    _clock: Callable[[], datetime]

    async def save_images(self, images: Sequence[Image], user_id: str | None) -> None:
        """Store each image unless it is stored already, and `user_id` (None: auth
        is off) as one of its owners; one transaction."""
        for attempt in (1, 2):
            try:
                async with self._db.writing() as conn:
                    for image in {i.sha256: i for i in images}.values():
                        sha = {"b_sha": image.sha256}
                        if (await conn.execute(_HAS_IMAGE, sha)).first() is None:
                            row = {
                                "sha256": image.sha256,
                                "media_type": image.media_type,
                                "size": len(image.data),
                                "data": image.data,
                                "created_at": self._clock(),
                            }
                            await conn.execute(_INSERT_IMAGE, row)
                        if user_id is None:
                            continue
                        owner = {**sha, "b_user": user_id}
                        if (await conn.execute(_HAS_OWNER, owner)).first() is None:
                            await conn.execute(
                                _INSERT_OWNER, {"sha256": image.sha256, "user_id": user_id}
                            )
                return
            except IntegrityError:  # another request stored the same image meanwhile
                if attempt == 2:
                    raise

    async def read_image(self, sha256: str, user_id: str | None) -> Image | None:
        """The image, if `user_id` sent it in (None: auth is off, any image)."""
        if _SHA.fullmatch(sha256) is None:
            return None
        async with self._db.reading() as conn:
            if user_id is None:
                row = (await conn.execute(_READ, {"b_sha": sha256})).first()
            else:
                params = {"b_sha": sha256, "b_user": user_id}
                row = (await conn.execute(_READ_OWNED, params)).first()
        return None if row is None else Image(row.sha256, row.media_type, bytes(row.data))

    async def load_images(self, shas: Iterable[str]) -> dict[str, Image]:
        """The stored images of these SHA-256s (an unknown one is left out)."""
        found: dict[str, Image] = {}
        async with self._db.reading() as conn:
            for sha in dict.fromkeys(shas):
                row = (await conn.execute(_READ, {"b_sha": sha})).first()
                if row is not None:
                    found[sha] = Image(row.sha256, row.media_type, bytes(row.data))
        return found
