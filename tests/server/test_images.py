"""Images in through the chat API and useChat: stored once, served to their owner only,
sent to each kind of upstream in its own wire format; and every refusal stores nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from streamkeep.config import ProviderConfig
from tests.imagekit import data_uri, echo_tag, png, sha
from tests.server.conftest import MODEL, Server, ServerFactory
from tests.server.sse import read_all, text_of
from tests.server.team import team


async def _send(client: httpx.AsyncClient, chat_id: str, **body: Any) -> tuple[int, Any]:
    """POST a message; (status, the reply's text or the error body)."""
    async with client.stream("POST", f"/api/chats/{chat_id}/messages", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.json()
        return 200, text_of(await read_all(r))


def _file(data: bytes, media_type: str = "image/png") -> dict[str, str]:
    return {"type": "file", "mediaType": media_type, "url": data_uri(data, media_type)}


async def test_an_image_reaches_an_openai_upstream_and_is_served_back(server: Server) -> None:
    image = png(3, 2)
    chat = await server.new_chat()
    status, text = await _send(
        server.client, chat["id"], content="what is it?", files=[_file(image)]
    )
    assert status == 200
    assert text == f"Hello! You said: what is it? [images: {echo_tag(image)}]"
    sent = server.upstream.requests[-1]["messages"][-1]
    assert sent == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_uri(image)}},
            {"type": "text", "text": "what is it?"},
        ],
    }
    detail = (await server.client.get(f"/api/chats/{chat['id']}")).json()
    user = detail["messages"][0]
    url = f"/api/images/{sha(image)}"
    assert user["parts"] == [
        {"type": "file", "mediaType": "image/png", "url": url},
        {"type": "text", "text": "what is it?"},
    ]
    r = await server.client.get(url)
    assert r.status_code == 200
    assert r.content == image
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in r.headers["cache-control"]

    # The next turn resends the history with the image, read back from the store.
    status, text = await _send(server.client, chat["id"], content="and now?")
    assert (status, text) == (200, "Hello! You said: and now?")
    history = server.upstream.requests[-1]["messages"]
    assert history[0]["content"][0] == {"type": "image_url", "image_url": {"url": data_uri(image)}}


async def test_the_same_image_twice_is_stored_once(server: Server) -> None:
    image = png(1, 1)
    chat = await server.new_chat()
    for word in ("one", "two"):
        assert (await _send(server.client, chat["id"], content=word, files=[_file(image)]))[
            0
        ] == 200
    # A type claimed wrongly is corrected by the bytes: it is a PNG.
    status, _ = await _send(
        server.client, chat["id"], content="x", files=[_file(image, "image/gif")]
    )
    assert status == 200
    async with server.store._db.reading() as conn:
        from sqlalchemy import func, select

        from streamkeep.store.models import IMAGES

        count = (await conn.execute(select(func.count()).select_from(IMAGES))).scalar_one()
    assert count == 1
    detail = (await server.client.get(f"/api/chats/{chat['id']}")).json()
    assert detail["messages"][-2]["parts"][0]["mediaType"] == "image/png"


async def test_an_image_reaches_an_anthropic_upstream_in_its_format(
    server_factory: ServerFactory,
) -> None:
    probe = await server_factory()
    root = probe.upstream.root_url
    providers = {"claude": ProviderConfig(kind="anthropic", base_url=root, api_key="x")}
    server = await server_factory(providers=providers, model="claude/fake-model")
    image = png(2, 3, (0, 0, 255))
    chat = await server.new_chat()
    status, text = await _send(server.client, chat["id"], content="look", files=[_file(image)])
    assert (status, text) == (200, f"Hello! You said: look [images: {echo_tag(image)}]")
    body = server.upstream.requests[-1]
    assert body["messages"][-1]["content"][0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": data_uri(image)[22:]},
    }
    assert server.upstream.rejected == []


async def test_usechat_takes_file_parts(server: Server) -> None:
    image = png(4, 4)
    body = {
        "id": "usechat-images-1",
        "messages": [
            {
                "id": "u1",
                "role": "user",
                "parts": [_file(image), {"type": "text", "text": "describe"}],
            }
        ],
    }
    async with server.client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        text = text_of(await read_all(r))
    assert text == f"Hello! You said: describe [images: {echo_tag(image)}]"
    detail = (await server.client.get("/api/chats/usechat-images-1")).json()
    assert detail["messages"][0]["parts"][0]["url"] == f"/api/images/{sha(image)}"


@pytest.mark.parametrize(
    ("files", "status", "kind", "says"),
    [
        ([_file(b"not an image at all")], 415, "unsupported_image_type", "png"),
        ([{"url": "data:application/pdf;base64,JVBERi0="}], 415, "unsupported_image_type", "pdf"),
        ([{"url": "data:image/png;base64,@@@"}], 400, "invalid_image", "base64"),
        ([{"url": "data:image/png,rawbytes"}], 400, "invalid_image", "base64"),
        ([{"url": "data:image/png;base64,"}], 400, "invalid_image", "empty"),
        ([_file(png() + bytes(400))], 413, "image_too_large", "at most 300 are taken"),
        ([_file(png()), _file(png(1, 1))], 400, "invalid_image", "at most 1 images"),
        ([{"url": "https://example.com/cat.png"}], 400, "invalid_image", "fetch_image_urls"),
        ([{"url": "ftp://example.com/cat.png"}], 400, "invalid_image", "http(s)"),
    ],
)
async def test_a_refused_image_stores_nothing(
    server_factory: ServerFactory, files: list[dict[str, str]], status: int, kind: str, says: str
) -> None:
    server = await server_factory(max_image_bytes=300, max_images_per_message=1)
    chat = await server.new_chat()
    code, error = await _send(server.client, chat["id"], content="hi", files=files)
    assert code == status, error
    assert error["error"]["type"] == kind
    assert says in error["error"]["message"]
    detail = (await server.client.get(f"/api/chats/{chat['id']}")).json()
    assert detail["messages"] == []
    assert server.upstream.requests == []
    assert await server.store.load_images([sha(png()), sha(png(1, 1))]) == {}


async def test_a_model_that_takes_no_images_is_refused_before_anything_is_stored(
    server_factory: ServerFactory,
) -> None:
    probe = await server_factory()
    plain = ProviderConfig(
        kind="openai", base_url=probe.upstream.base_url, models=["fake-model"], images=False
    )
    server = await server_factory(
        providers={"fake": probe.app.state.settings.providers["fake"], "plain": plain},
        enable_local_model=True,
    )
    image = png()
    for model in ("plain/fake-model", "local/smollm2"):
        chat = await server.new_chat(model=model)
        code, error = await _send(server.client, chat["id"], content="hi", files=[_file(image)])
        assert code == 400
        assert error["error"]["type"] == "images_not_supported"
        assert model in error["error"]["message"]
        assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
    # useChat refuses before it creates the chat.
    body = {
        "id": "no-images-chat",
        "model": "local/smollm2",
        "messages": [{"role": "user", "parts": [_file(image), {"type": "text", "text": "x"}]}],
    }
    r = await server.client.post("/api/chat", json=body)
    assert r.status_code == 400
    assert (await server.client.get("/api/chats/no-images-chat")).status_code == 404
    assert await server.store.load_images([sha(image)]) == {}
    assert server.upstream.requests == []

    # A chat with images in its history cannot switch its next reply to such a model.
    chat = await server.new_chat(model=MODEL)
    assert (await _send(server.client, chat["id"], content="hi", files=[_file(image)]))[0] == 200
    code, error = await _send(server.client, chat["id"], content="more", model="plain/fake-model")
    assert (code, error["error"]["type"]) == (400, "images_not_supported")


async def test_an_image_is_served_to_its_owners_only(server: Server) -> None:
    image, other = png(5, 5), png(6, 6)
    async with team(server, {"ann": 1, "bob": 1}) as members:
        ann, bob = members["ann"].client, members["bob"].client
        chat = (await ann.post("/api/chats", json={})).json()
        assert (await _send(ann, chat["id"], content="mine", files=[_file(image)]))[0] == 200
        url = f"/api/images/{sha(image)}"
        assert (await ann.get(url)).content == image
        r = await bob.get(url)
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found"
        assert (await ann.get(f"/api/images/{sha(other)}")).status_code == 404
        assert (await ann.get("/api/images/not-a-hash")).status_code == 404
        # Bob sending the same bytes makes him an owner too (it stays stored once).
        bobs = (await bob.post("/api/chats", json={})).json()
        assert (await _send(bob, bobs["id"], content="me too", files=[_file(image)]))[0] == 200
        assert (await bob.get(url)).content == image
        assert (await server.client.get(url)).status_code == 401


async def test_an_edited_message_keeps_its_images(server: Server) -> None:
    image = png(9, 9)
    chat = await server.new_chat()
    assert (await _send(server.client, chat["id"], content="first", files=[_file(image)]))[0] == 200
    user = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"][0]
    path = f"/api/messages/{user['id']}/edit"
    async with server.client.stream("POST", path, json={"content": "second"}) as r:
        assert r.status_code == 200
        text = text_of(await read_all(r))
    assert text == f"Hello! You said: second [images: {echo_tag(image)}]"
    edited = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"][0]
    assert edited["id"] != user["id"]
    assert edited["parts"] == [user["parts"][0], {"type": "text", "text": "second"}]
