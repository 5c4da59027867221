"""Server-Sent Events as streamkeep writes them: the frames, the last payload, the headers.

Every stream streamkeep answers with (the chat API's UI message stream, the gateway's
`chat.completion.chunk`s, a pure relay, a keep-alive) is framed here and nowhere else:

    id: 7\\ndata: {...}\\n\\n    a numbered frame: a client resumes after any id (chat API)
    data: {...}\\n\\n           an unnumbered frame (the gateway, a stream's error ending)
    : ping\\n\\n                a comment, which every SSE parser skips (keep-alive)

A payload made by `named` carries its own `event:` line (Anthropic's Messages stream
names every event); it is framed as `event: NAME\\ndata: {...}\\n\\n` (after its id).

Both protocols end with the payload `DONE`. Reading a provider's SSE is `llm.sse`'s.
This module imports nothing of streamkeep, so every layer can use it.
"""

from __future__ import annotations

#: The last payload of every stream (`data: [DONE]`).
DONE = b"[DONE]"

#: A comment: keeps an idle connection open through proxies, and no client sees it.
PING = b": ping\n\n"

#: The headers every SSE response carries besides its content type: no cache may hold
#: the stream back, and nginx must not buffer it (`x-accel-buffering`).
HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


_EVENT = b"event: "


def named(event: bytes, data: bytes) -> bytes:
    """A payload whose frame names its event: `event: EVENT` before `data: DATA`."""
    return _EVENT + event + b"\ndata: " + data


def _body(payload: bytes) -> bytes:
    return payload if payload.startswith(_EVENT) else b"data: " + payload


def numbered_frames(payloads: list[bytes], first_seq: int) -> list[bytes]:
    """`payloads` as frames with the ids `first_seq`, `first_seq + 1`, ..."""
    return [
        b"id: %d\n%s\n\n" % (seq, _body(payload)) for seq, payload in enumerate(payloads, first_seq)
    ]


def frames(payloads: list[bytes]) -> bytes:
    """`payloads` as unnumbered frames, joined."""
    return b"".join([_body(payload) + b"\n\n" for payload in payloads])
