"""A typed, synchronous client for the chat API and its UI message stream (docs/api.md).

Synchronous on purpose: a terminal client's one hard case is Ctrl+C in the middle of a
reply, and a KeyboardInterrupt raised into a blocking read is simpler and more reliable
than signal handling across an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from streamkeep.llm.sse import SSEDecoder

RESUME_ATTEMPTS = 6
RESUME_FIRST_DELAY = 0.25
RESUME_MAX_DELAY = 4.0


class ApiError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {type_})")
        self.status = status
        self.type = type_
        self.message = message


class ServerUnreachable(Exception):
    """Nothing answers at the server's URL."""


@dataclass(slots=True, frozen=True)
class Chunk:
    """One UI message stream chunk; `data` is None for the closing `[DONE]`."""

    seq: int | None
    data: dict[str, Any] | None

    @property
    def type(self) -> str:
        return "done" if self.data is None else str(self.data.get("type", ""))


class StreamkeepClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        # No read timeout on streams: a model may think for minutes before a token.
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, read=None), headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StreamkeepClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain JSON calls -------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.base_url) from exc
        _raise_for_error(response)
        return response.json() if response.content else None

    def create_chat(
        self,
        *,
        model: str | None = None,
        system: str | None = None,
        title: str | None = None,
        tools: list[str] | None = None,
    ) -> dict[str, Any]:
        """A new chat; `tools`: the names of the tools its replies may call."""
        fields = (("model", model), ("system", system), ("title", title), ("tools", tools))
        body = {k: v for k, v in fields if v}
        result: dict[str, Any] = self._request("POST", "/api/chats", json=body)
        return result

    def update_chat(self, chat_id: str, **changes: Any) -> dict[str, Any]:
        """PATCH the chat: `title`, `model`, `tools` (the whole list), `active_leaf_id`."""
        result: dict[str, Any] = self._request("PATCH", f"/api/chats/{chat_id}", json=changes)
        return result

    def list_chats(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = self._request("GET", "/api/chats", params=params)
        return result

    def get_chat(self, chat_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/chats/{chat_id}")
        return result

    def stop(self, chat_id: str) -> bool:
        result = self._request("POST", f"/api/chats/{chat_id}/stop")
        return bool(result and result.get("stopped"))

    # -- streams ----------------------------------------------------------------------

    def get_message(self, message_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/api/messages/{message_id}")
        return result

    def send(self, chat_id: str, content: str, *, model: str | None = None) -> Iterator[Chunk]:
        """Send a message and yield the reply's chunks. A dropped connection is resumed
        with Last-Event-ID (retrying while the server restarts), so nothing is lost or
        repeated; if the reply ended meanwhile, the stream just ends (the stored message,
        `get_message`, is then the truth)."""
        body: dict[str, Any] = {"content": content}
        if model:
            body["model"] = model
        state = _Cursor()
        if (yield from self._stream("POST", f"/api/chats/{chat_id}/messages", state, json=body)):
            return
        delay = RESUME_FIRST_DELAY
        for _ in range(RESUME_ATTEMPTS):
            time.sleep(delay)
            try:
                if (yield from self.resume(chat_id, state)):
                    return
            except ServerUnreachable:
                pass  # restarting: try again
            delay = min(delay * 2, RESUME_MAX_DELAY)

    def resume(self, chat_id: str, state: _Cursor | None = None) -> Generator[Chunk, None, bool]:
        """Replay and follow the chat's live reply after `state.seq`; True once it ended."""
        state = state or _Cursor()
        headers = {"Last-Event-ID": str(state.seq)} if state.seq else {}
        path = f"/api/chats/{chat_id}/stream"
        return (yield from self._stream("GET", path, state, headers=headers))

    def _stream(
        self, method: str, path: str, state: _Cursor, **kwargs: Any
    ) -> Generator[Chunk, None, bool]:
        """Yield chunks; True when the stream ended ([DONE], or 204: nothing live),
        False when the connection dropped first."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code == 204:
                    return True
                if response.status_code >= 400:
                    response.read()
                    _raise_for_error(response)
                decoder = SSEDecoder()
                try:
                    for raw in response.iter_raw():
                        for event in decoder.feed(raw):
                            chunk = _chunk(event.data, event.id)
                            state.seq = chunk.seq or state.seq
                            yield chunk
                            if chunk.data is None:
                                return True
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    pass
                return False
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.base_url) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return False  # dropped before the headers


@dataclass(slots=True)
class _Cursor:
    """The last sequence number received, shared across a reply's reconnections."""

    seq: int = 0


def _chunk(data: str, event_id: str | None) -> Chunk:
    seq = int(event_id) if event_id and event_id.isdigit() else None
    if data == "[DONE]":
        return Chunk(seq, None)
    return Chunk(seq, orjson.loads(data))


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        raise ApiError(response.status_code, str(error["type"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:500]) from None
