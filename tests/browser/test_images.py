"""Images in the page: attach (and drop, and paste) images, see and remove thumbnails, send; the
fake provider receives them in OpenAI's format, and the sent message shows them from
the server after a reload."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.pagekit import chat_id, last_reply, send, stored_chat
from tests.imagekit import data_uri, echo_tag, png, sha

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_attach_drop_remove_send_and_see_the_image(
    page: Page, api: httpx.Client, tmp_path: Path
) -> None:
    image, dropped = png(8, 6, (20, 160, 40)), png(3, 3, (0, 0, 0))
    path = tmp_path / "green.png"
    path.write_bytes(image)
    page.goto("/")
    page.locator("#attach-input").set_input_files(str(path))
    thumbs = page.get_by_role("list", name="Images to send").locator("img")
    expect(thumbs).to_have_count(1)

    # A file dropped on the composer is attached too; its thumbnail removes it.
    page.evaluate(
        """b64 => {
             const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const dt = new DataTransfer();
             dt.items.add(new File([bytes], "black.png", {type: "image/png"}));
             const zone = document.getElementById("composer");
             const init = {dataTransfer: dt, bubbles: true, cancelable: true};
             zone.dispatchEvent(new DragEvent("dragover", init));
             zone.dispatchEvent(new DragEvent("drop", init));
           }""",
        base64.b64encode(dropped).decode(),
    )
    expect(thumbs).to_have_count(2)
    # And one pasted into the message box.
    page.evaluate(
        """b64 => {
             const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
             const dt = new DataTransfer();
             dt.items.add(new File([bytes], "pasted.png", {type: "image/png"}));
             const init = {clipboardData: dt, bubbles: true, cancelable: true};
             document.getElementById("input").dispatchEvent(new ClipboardEvent("paste", init));
           }""",
        base64.b64encode(dropped).decode(),
    )
    expect(thumbs).to_have_count(3)
    page.get_by_role("button", name="Remove black.png").click()
    page.get_by_role("button", name="Remove pasted.png").click()
    expect(thumbs).to_have_count(1)

    send(page, "What colour is this?")
    # The fake provider's echo names each image it received, by type and hash: it took
    # the request (its checks of OpenAI's format passed) and got these very bytes.
    expect(last_reply(page)).to_contain_text(f"[images: {echo_tag(image)}]")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    expect(page.get_by_role("list", name="Images to send")).to_be_hidden()

    cid = chat_id(page)
    stored = stored_chat(api, cid)
    assert stored["messages"][0]["parts"][0] == {
        "type": "file",
        "mediaType": "image/png",
        "url": f"/api/images/{sha(image)}",
    }
    page.reload()
    shown = page.locator("li.msg.user img.msg-image")
    expect(shown).to_have_count(1)
    expect(shown).to_have_attribute("src", f"/api/images/{sha(image)}")
    page.wait_for_function(
        "() => { const i = document.querySelector('li.msg.user img.msg-image');"
        " return i && i.complete && i.naturalWidth === 8 && i.naturalHeight === 6; }"
    )


def test_an_image_sent_through_each_gateway_api_shows_in_the_page(
    page: Page, api: httpx.Client
) -> None:
    """Chat Completions, Anthropic Messages and Responses: each call's image reaches the
    provider (its echo names the bytes) and shows in the page's view of the kept chat."""
    model = api.get("/v1/models").json()["data"][0]["id"]
    calls = []
    for n, (path, body) in enumerate(_gateway_calls(model)):
        image = png(4 + n, 5, (200, 30 * n, 90))
        r = api.post(path, json=_with_image(body, data_uri(image)))
        assert r.status_code == 200, r.text
        assert f"[images: {echo_tag(image)}]" in r.text
        calls.append((r.headers["x-streamkeep-chat-id"], image))
    for n, (cid, image) in enumerate(calls):
        page.goto(f"/#/chat/{cid}")
        shown = page.locator("li.msg.user img.msg-image")
        expect(shown).to_have_count(1)
        expect(shown).to_have_attribute("src", f"/api/images/{sha(image)}")
        page.wait_for_function(
            "w => { const i = document.querySelector('li.msg.user img.msg-image');"
            " return i && i.complete && i.naturalWidth === w; }",
            arg=4 + n,
        )


def _gateway_calls(model: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/v1/chat/completions", {"model": model, "messages": []}),
        ("/v1/messages", {"model": model, "max_tokens": 50, "messages": []}),
        ("/v1/responses", {"model": model, "input": []}),
    ]


def _with_image(body: dict[str, Any], uri: str) -> dict[str, Any]:
    if "input" in body:
        content: list[dict[str, Any]] = [
            {"type": "input_text", "text": "what is it?"},
            {"type": "input_image", "image_url": uri},
        ]
        return {**body, "input": [{"role": "user", "content": content}]}
    if "max_tokens" in body:
        media, data = uri.removeprefix("data:").split(";base64,")
        source = {"type": "base64", "media_type": media, "data": data}
        content = [{"type": "image", "source": source}, {"type": "text", "text": "what is it?"}]
    else:
        content = [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": uri}},
        ]
    return {**body, "messages": [{"role": "user", "content": content}]}
