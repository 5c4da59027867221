"""The one exception hierarchy of `streamkeep.store`.

    StoreError                 anything the store refuses or cannot do
    ├── NotFound               an unknown chat / message / generation id, user name,
    │                          API key id (has .what, .id)
    ├── AlreadyExists          a name that is taken (a user's; has .what, .name)
    ├── GenerationConflict     the chat already has a running generation, or the
    │                          idempotency key was used before (has .generation_id,
    │                          .message_id, .same_key, .running)
    ├── InvalidOperation       a request that can never succeed as given (a parent id
    │                          from another chat, a bad cursor, an unknown status, a
    │                          bad user name, a key for a disabled user)
    ├── EventSeqMoved          a reply's first stream event id was taken meanwhile by
    │                          another generation of the chat (has .event_seq, the
    │                          chat's current one: start again after it)
    └── ImageRejected          an image that cannot be taken (has .status: 400, 413
                               or 415; see `store.images`)

An operation that raises wrote nothing: every write is one transaction.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by streamkeep.store."""

    #: a short machine-readable kind, used in API error bodies
    kind: str = "store_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    kind = "not_found"

    def __init__(self, what: str, id: str) -> None:
        super().__init__(f"{what} {id!r} not found")
        self.what = what
        self.id = id


class AlreadyExists(StoreError):
    kind = "already_exists"

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} {name!r} exists already")
        self.what = what
        self.name = name


class GenerationConflict(StoreError):
    """Starting a reply collided with an existing generation of the same chat.

    `same_key` is True when that generation was started with the request's own
    idempotency key: the caller then joins it (it is a retry of the same request)
    instead of starting a second one. `running` is False only in that case, when the
    keyed generation has already finished.
    """

    kind = "generation_conflict"

    def __init__(
        self, *, generation_id: str, message_id: str, same_key: bool, running: bool = True
    ) -> None:
        state = "running" if running else "finished"
        super().__init__(f"chat has a {state} generation {generation_id!r}")
        self.generation_id = generation_id
        self.message_id = message_id
        self.same_key = same_key
        self.running = running


class InvalidOperation(StoreError):
    kind = "invalid_operation"


class EventSeqMoved(StoreError):
    """`start_reply` was given a first event id at or below the chat's `event_seq`:
    another generation of the chat started (and ended) since the caller read it.
    Nothing was written; `event_seq` is the chat's value now."""

    kind = "event_seq_moved"

    def __init__(self, chat_id: str, event_seq: int) -> None:
        super().__init__(f"chat {chat_id!r} has used stream event ids up to {event_seq}")
        self.chat_id = chat_id
        self.event_seq = event_seq


class ImageRejected(StoreError):
    """An image that cannot be taken: not a data URI or base64, empty (`invalid_image`),
    too large (`image_too_large`), of a type not taken (`unsupported_image_type`), more
    than a message may carry, or for a model that takes none (`images_not_supported`).
    `status` is the HTTP status that says so."""

    kind = "invalid_image"
    status = 400


class ImageTooLarge(ImageRejected):
    kind = "image_too_large"
    status = 413


class UnsupportedImageType(ImageRejected):
    kind = "unsupported_image_type"
    status = 415


class ImagesNotSupported(ImageRejected):
    kind = "images_not_supported"
