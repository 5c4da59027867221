"""Images through `POST /v1/chat/completions` (the official OpenAI SDK): `image_url`
parts reach an OpenAI-compatible and an Anthropic upstream each in its own format, are
stored as the chat API stores them, and every refusal stores and sends nothing. Image
URLs: off by default, never from a private address, fetched from an allowed host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web

from streamkeep.config import ProviderConfig
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.imagekit import data_uri, echo_tag, png, sha

CHAT_HEADER = "x-streamkeep-chat-id"


def _user(text: str, *urls: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"role": "user", "content": [{"type": "text", "text": text}, *parts]}


@pytest.fixture(params=["openai", "anthropic"])
async def gw(request: pytest.FixtureRequest, gateway_factory: GatewayFactory) -> Gateway:
    if request.param == "anthropic":
        upstream = request.getfixturevalue("fake_upstream")
        provider = ProviderConfig(
            kind="anthropic", base_url=upstream.root_url, api_key="x", models=["fake-model"]
        )
        gateway = await gateway_factory(providers={"fake": provider})
    else:
        gateway = await gateway_factory()
    gateway.kind = request.param  # type: ignore[attr-defined]
    return gateway


async def test_an_image_reaches_the_upstream_in_its_format_and_is_kept(gw: Gateway) -> None:
    image = png(7, 3)
    messages = [_user("what is this?", data_uri(image))]
    async with gw.async_client() as client:
        raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    answer = raw.parse().choices[0].message.content
    assert answer == f"Hello! You said: what is this? [images: {echo_tag(image)}]"
    sent = gw.upstream.requests[-1]["messages"][-1]["content"]
    if gw.kind == "anthropic":  # type: ignore[attr-defined]
        source = {"type": "base64", "media_type": "image/png", "data": data_uri(image)[22:]}
        assert sent[0] == {"type": "image", "source": source}
    else:
        assert sent[0] == {"type": "image_url", "image_url": {"url": data_uri(image)}}
    assert gw.upstream.rejected == []

    chat_id = raw.headers[CHAT_HEADER]
    chat = await gw.chat(chat_id)
    url = f"/api/images/{sha(image)}"
    assert chat["messages"][0]["parts"] == [
        {"type": "file", "mediaType": "image/png", "url": url},
        {"type": "text", "text": "what is this?"},
    ]
    assert (await gw.http.get(url)).content == image

    # The client resends the conversation: only the new turn is stored, and the image
    # goes to the upstream again with the history.
    messages += [{"role": "assistant", "content": answer}, _user("and this?", data_uri(png()))]
    async with gw.async_client() as client:
        await client.chat.completions.create(
            model=MODEL, messages=messages, extra_headers={CHAT_HEADER: chat_id}
        )
    chat = await gw.chat(chat_id)
    assert len(chat["messages"]) == 4
    assert chat["messages"][2]["parts"][0]["url"] == f"/api/images/{sha(png())}"
    history = gw.upstream.requests[-1]["messages"]
    assert (
        len(
            [
                p
                for m in history
                for p in m["content"]
                if isinstance(p, dict) and p["type"] in ("image", "image_url")
            ]
        )
        == 2
    )


async def test_a_relayed_call_sends_the_image_and_stores_nothing(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(gateway_store=False)
    image = png(2, 2, (9, 9, 9))
    async with gw.async_client() as client:
        answer = await client.chat.completions.create(
            model=MODEL, messages=[_user("hi", data_uri(image))]
        )
    assert answer.choices[0].message.content == f"Hello! You said: hi [images: {echo_tag(image)}]"
    assert await gw.app.state.store.load_images([sha(image)]) == {}


async def _refused(gw: Gateway, messages: list[dict[str, Any]]) -> openai.APIStatusError:
    async with gw.async_client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=messages)
    chats = (await gw.http.get("/api/chats")).json()["items"]
    assert chats == []
    assert gw.upstream.requests == []
    return caught.value


@pytest.mark.parametrize(
    ("url", "status", "code", "says"),
    [
        (data_uri(b"GIF8 but not really"), 415, "unsupported_image_type", "png"),
        ("data:image/png;base64,!!", 400, "invalid_image", "base64"),
        (data_uri(png() + bytes(500)), 413, "image_too_large", "at most 400"),
        ("https://example.com/cat.png", 400, "invalid_image", "fetch_image_urls"),
    ],
)
async def test_a_refused_image_changes_nothing(
    gateway_factory: GatewayFactory, url: str, status: int, code: str, says: str
) -> None:
    gw = await gateway_factory(max_image_bytes=400)
    error = await _refused(gw, [{"role": "system", "content": "hi"}, _user("look", url)])
    assert error.status_code == status
    body: Any = error.body
    assert body["code"] == code
    assert body["param"] == "messages[1].content"
    assert says in body["message"]


async def test_too_many_images_and_images_outside_user_messages(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(max_images_per_message=1)
    error = await _refused(gw, [_user("two", data_uri(png()), data_uri(png(1, 1)))])
    assert (error.status_code, error.body["code"]) == (400, "invalid_image")  # type: ignore[index]
    assistant = {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    error = await _refused(gw, [_user("a"), assistant, _user("b")])
    assert error.status_code == 400
    assert "taken in a user message" in error.body["message"]  # type: ignore[index]


async def test_a_model_that_takes_no_images_is_refused(gateway_factory: GatewayFactory) -> None:
    probe = await gateway_factory()
    plain = ProviderConfig(
        kind="openai", base_url=probe.upstream.base_url, models=["fake-model"], images=False
    )
    gw = await gateway_factory(providers={"fake": plain})
    error = await _refused(gw, [_user("look", data_uri(png()))])
    assert (error.status_code, error.body["code"]) == (400, "images_not_supported")  # type: ignore[index]
    assert await gw.app.state.store.load_images([sha(png())]) == {}


@pytest.fixture
async def image_host() -> AsyncIterator[str]:
    """A real HTTP server on loopback serving /cat.png (a PNG) and /notes.txt."""

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=png(4, 5), content_type="image/png")

    async def notes(_: web.Request) -> web.Response:
        return web.Response(text="not an image")

    async def away(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:1/cat.png")

    app = web.Application()
    app.router.add_get("/cat.png", cat)
    app.router.add_get("/notes.txt", notes)
    app.router.add_get("/away", away)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


async def test_image_urls_are_never_fetched_from_private_addresses(
    gateway_factory: GatewayFactory, image_host: str
) -> None:
    gw = await gateway_factory(fetch_image_urls=True)
    port = image_host.rpartition(":")[2]
    for url in (
        f"http://{image_host}/cat.png",
        f"http://localhost:{port}/cat.png",  # a name that resolves to loopback
        "http://[::1]/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/cat.png",
    ):
        error = await _refused(gw, [_user("look", url)])
        assert error.status_code == 400, url
        assert "private or local address" in error.body["message"], url  # type: ignore[index]


async def test_an_image_url_is_fetched_from_an_allowed_host(
    gateway_factory: GatewayFactory, image_host: str
) -> None:
    gw = await gateway_factory(fetch_image_urls=True, image_url_hosts_allowed=["127.0.0.1"])
    async with gw.async_client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[_user("cat?", f"http://{image_host}/cat.png")]
        )
    assert raw.parse().choices[0].message.content == (
        f"Hello! You said: cat? [images: {echo_tag(png(4, 5))}]"
    )
    parts = (await gw.chat(raw.headers[CHAT_HEADER]))["messages"][0]["parts"]
    assert parts[0]["url"] == f"/api/images/{sha(png(4, 5))}"
    gw.upstream.requests.clear()
    for path, status in (("/notes.txt", 415), ("/away", 400), ("/missing", 400)):
        async with gw.async_client() as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model=MODEL, messages=[_user("x", f"http://{image_host}{path}")]
                )
        assert caught.value.status_code == status, path
    assert gw.upstream.requests == []


# -- /v1/messages ----------------------------------------------------------------------


def _anthropic_user(text: str, *sources: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [{"type": "image", "source": s} for s in sources]
    return {"role": "user", "content": [*blocks, {"type": "text", "text": text}]}


def _base64(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "base64", "media_type": media_type, "data": data_uri(data)[22:]}


async def test_messages_image_blocks_reach_the_upstream_and_are_kept(gw: Gateway) -> None:
    image = png(5, 2, (1, 2, 3))
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [_anthropic_user("what?", _base64(image))],
    }
    r = await gw.http.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == f"Hello! You said: what? [images: {echo_tag(image)}]"
    sent = gw.upstream.requests[-1]["messages"][-1]["content"][0]
    if gw.kind == "anthropic":  # type: ignore[attr-defined]
        assert sent == {"type": "image", "source": _base64(image)}
    else:
        assert sent == {"type": "image_url", "image_url": {"url": data_uri(image)}}
    chat = await gw.chat(r.headers[CHAT_HEADER])
    assert chat["messages"][0]["parts"] == [
        {"type": "file", "mediaType": "image/png", "url": f"/api/images/{sha(image)}"},
        {"type": "text", "text": "what?"},
    ]
    assert (await gw.http.get(f"/api/images/{sha(image)}")).content == image


@pytest.mark.parametrize(
    ("source", "status", "says"),
    [
        (_base64(b"plain text"), 415, "png"),
        ({"type": "base64", "media_type": "image/png", "data": "%%%"}, 400, "base64"),
        ({"type": "base64", "media_type": "image/png"}, 400, "source.data"),
        ({"type": "url", "url": "https://example.com/a.png"}, 400, "fetch_image_urls"),
        ({"type": "url", "url": "http://127.0.0.1:9/a.png"}, 400, "fetch_image_urls"),
    ],
)
async def test_messages_refused_image_blocks_change_nothing(
    gateway: Gateway, source: dict[str, Any], status: int, says: str
) -> None:
    body = {"model": MODEL, "max_tokens": 50, "messages": [_anthropic_user("x", source)]}
    r = await gateway.http.post("/v1/messages", json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["type"] == "error"
    assert says in error["error"]["message"]
    assert gateway.upstream.requests == []
    assert (await gateway.http.get("/api/chats")).json()["items"] == []


async def test_messages_url_images_follow_the_same_rules(
    gateway_factory: GatewayFactory, image_host: str
) -> None:
    gw = await gateway_factory(fetch_image_urls=True)
    source = {"type": "url", "url": f"http://{image_host}/cat.png"}
    body = {"model": MODEL, "max_tokens": 50, "messages": [_anthropic_user("x", source)]}
    r = await gw.http.post("/v1/messages", json=body)
    assert r.status_code == 400
    assert "private or local address" in r.json()["error"]["message"]
    allowed = await gateway_factory(fetch_image_urls=True, image_url_hosts_allowed=["127.0.0.1"])
    r = await allowed.http.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert echo_tag(png(4, 5)) in r.json()["content"][0]["text"]
