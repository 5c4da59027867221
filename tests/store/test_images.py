"""Images: what their bytes say they are, data URIs, and storing each content once
with the users who sent it in."""

from __future__ import annotations

import pytest

from streamkeep.store import ChatStore
from streamkeep.store.errors import ImageRejected, ImageTooLarge, UnsupportedImageType
from streamkeep.store.images import (
    image_from_bytes,
    image_from_data_uri,
    image_sha,
    sniff,
)
from tests.imagekit import data_uri, png, sha

WEBP = (
    b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00"
    b"\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
)


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (png(), "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),
        (b"GIF87a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),
        (WEBP, "image/webp"),
        (b"RIFF\x1a\x00\x00\x00WAVEfmt ", None),  # RIFF, but audio
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_the_bytes_say_the_type(data: bytes, media_type: str | None) -> None:
    assert sniff(data) == media_type


def test_a_data_uri_is_read_by_its_bytes_not_its_claim() -> None:
    image = image_from_data_uri(data_uri(png(), "image/jpeg"), 10_000)
    assert (image.media_type, image.sha256, image.data) == ("image/png", sha(png()), png())
    assert image.part() == {"type": "file", "mediaType": "image/png", "url": image.url}
    assert image_sha(image.part()) == sha(png())
    # Parameters before `base64`, and a type given in capitals, are read too.
    uri = "DATA:image/PNG;name=x.png;BASE64," + data_uri(png())[22:]
    assert image_from_data_uri(uri, 10_000).sha256 == sha(png())


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("https://example.com/x.png", ImageRejected),
        ("data:image/png,not-base64", ImageRejected),
        ("data:image/png;base64,***", ImageRejected),
        ("data:image/png;base64,", ImageRejected),
        ("data:text/plain;base64,aGk=", UnsupportedImageType),
        (data_uri(b"just text"), UnsupportedImageType),
        (data_uri(png() + bytes(100)), ImageTooLarge),
    ],
)
def test_bad_data_uris_are_refused(uri: str, error: type[ImageRejected]) -> None:
    with pytest.raises(error) as caught:
        image_from_data_uri(uri, len(png()) + 50)
    assert type(caught.value) is error


def test_the_size_limit_is_inclusive() -> None:
    assert image_from_bytes(png(), len(png())).data == png()
    with pytest.raises(ImageTooLarge):
        image_from_bytes(png(), len(png()) - 1)


def test_only_stored_image_parts_name_an_image() -> None:
    good = {"type": "file", "mediaType": "image/png", "url": "/api/images/" + "a" * 64}
    assert image_sha(good) == "a" * 64
    assert image_sha({**good, "url": "/api/images/" + "A" * 64}) is None
    assert image_sha({**good, "url": "/api/images/../x"}) is None
    assert image_sha({**good, "url": "data:image/png;base64,AA=="}) is None
    assert image_sha({**good, "type": "text"}) is None
    assert image_sha("not a part") is None


async def test_an_image_is_stored_once_with_each_owner(store: ChatStore) -> None:
    ann = await store.create_user("ann", "a long enough password")
    bob = await store.create_user("bob", "a long enough password")
    image = image_from_bytes(png(3, 3), 10_000)
    await store.save_images([image, image], ann.id)
    await store.save_images([image], ann.id)  # again: nothing new
    assert await store.read_image(image.sha256, ann.id) == image
    assert await store.read_image(image.sha256, bob.id) is None
    assert await store.read_image(image.sha256, None) == image  # auth off: anyone's
    await store.save_images([image], bob.id)
    assert await store.read_image(image.sha256, bob.id) == image
    assert await store.load_images([image.sha256, "f" * 64]) == {image.sha256: image}
    assert await store.read_image("not-a-sha", None) is None
