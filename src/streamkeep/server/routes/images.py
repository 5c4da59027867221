"""Images messages carry, served back to those who sent them in (see `store.images`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from streamkeep.http.auth import CallerDep
from streamkeep.http.deps import StoreDep
from streamkeep.server.schemas import ERROR_RESPONSES
from streamkeep.store.errors import NotFound

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)


@router.get(
    "/api/images/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "The image's bytes"}},
    summary="An image a message carries",
    description="Only for a user who sent it in (anyone's is a 404, as an unknown one); "
    "content-addressed, so cached for a year.",
)
async def get_image(sha256: str, store: StoreDep, caller: CallerDep) -> Response:
    image = await store.read_image(sha256, caller.user_id)
    if image is None:
        raise NotFound("image", sha256)
    return Response(
        image.data,
        media_type=image.media_type,
        headers={
            # Its name is its content: it never changes. Private: it is one user's.
            "cache-control": "private, max-age=31536000, immutable",
            "x-content-type-options": "nosniff",
        },
    )
