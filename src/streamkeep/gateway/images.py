"""The images of a gateway call: checked before anything is stored or sent.

Chat Completions' `image_url` parts (and `/v1/messages` image blocks, through
`image_error`) go through `http.images`, the chat API's checks; a refusal is an
OpenAI-shaped error whose `code` is the chat API's error type (`invalid_image`,
`image_too_large`, `unsupported_image_type`, `images_not_supported`).
"""

from __future__ import annotations

from streamkeep.config import Settings
from streamkeep.gateway.convert import MessageImages
from streamkeep.gateway.errors import GatewayError
from streamkeep.gateway.messages_schema import ImageBlock, MessagesBody
from streamkeep.gateway.schemas import ChatCompletionBody
from streamkeep.http.images import check_count, image_from_source
from streamkeep.store.errors import ImageRejected
from streamkeep.store.images import Image, image_from_base64


async def messages_images(body: MessagesBody, settings: Settings) -> list[list[Image]]:
    """Each `/v1/messages` message's image blocks, checked (fetched when allowed)."""
    found: list[list[Image]] = []
    for i, msg in enumerate(body.messages):
        blocks = [(j, b) for j, b in enumerate(msg.content) if isinstance(b, ImageBlock)]
        images: list[Image] = []
        for j, block in blocks:
            try:
                check_count(len(blocks), settings)
                source = block.source
                if source.type == "base64":
                    data, claimed = source.data or "", source.media_type
                    images.append(
                        image_from_base64(data, settings.max_image_bytes, claimed=claimed)
                    )
                else:
                    images.append(await image_from_source(source.url or "", settings))
            except ImageRejected as exc:
                raise image_error(exc, f"messages.{i}.content.{j}") from None
        found.append(images)
    if any(found):
        check_takes_images(body.model, settings)
    return found


async def request_images(body: ChatCompletionBody, settings: Settings) -> MessageImages:
    """Every user message's images, checked (fetched when allowed)."""
    images = MessageImages()
    for i, msg in enumerate(body.messages):
        if not msg.image_urls:
            continue
        try:
            check_count(len(msg.image_urls), settings)
            images.add(msg, [await image_from_source(u, settings) for u in msg.image_urls])
        except ImageRejected as exc:
            raise image_error(exc, f"messages[{i}].content") from None
    if images.all():
        check_takes_images(body.model, settings)
    return images


def check_takes_images(model: str, settings: Settings) -> None:
    if not settings.takes_images(model):
        raise GatewayError(
            400,
            f"model {model!r} takes no images; choose a model that does "
            "(a provider's `images` setting says which)",
            param="model",
            code="images_not_supported",
        )


def image_error(exc: ImageRejected, param: str) -> GatewayError:
    return GatewayError(exc.status, exc.message, param=param, code=exc.kind)
