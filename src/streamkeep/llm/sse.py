"""An incremental decoder for `text/event-stream` bodies (WHATWG HTML, "Server-sent events").

Feed it the body's bytes as they arrive, in pieces of any size, and it returns the events
completed so far. The rules it follows, from the specification's parsing section:

- A line ends with CRLF, LF or CR. A CR ending one read and an LF starting the next are
  one line ending, not two.
- An empty line dispatches the event. An event whose data buffer is empty is not
  dispatched (a block of only comments, `event:` or `id:` lines yields nothing).
- A line starting with `:` is a comment and is ignored.
- `field:value` splits at the first colon; a single space after the colon is dropped.
  A line with no colon is a field with an empty value (`data` alone adds an empty line).
- `data` lines accumulate, joined with LF. `event` sets the type (None when absent or
  empty, where a browser would say "message"). `id` sets the last event id, which, as
  in a browser, stays in force for later events (an empty `id:` clears it; an id
  containing NUL is ignored).
  `retry` and unknown fields are ignored.
- A leading UTF-8 byte order mark is dropped. Invalid UTF-8 becomes U+FFFD.
- At the end of the body an unterminated event is discarded: `flush()` never dispatches.

Speed: this runs for every token of every answer. It works on bytes, finds event
boundaries with one `rfind(b"\\n\\n")` per read (line endings are normalised to LF first,
which is safe because CR and LF bytes never occur inside a UTF-8 multibyte sequence, so a
character split across reads is only decoded once its event is whole), and a
one-line `data:` event (what OpenAI-compatible servers send) takes a short fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    __slots__ = ("_buf", "_cr_pending", "_last_id", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._last_id: str | None = None
        # The previous read ended with CR: an LF opening the next read belongs to it.
        self._cr_pending = False
        # False until the stream's first bytes were checked for a byte order mark.
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Take the next bytes of the body; return the events they complete."""
        if not chunk:
            return []
        if self._cr_pending:
            self._cr_pending = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr_pending = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        # A boundary may straddle the old and new bytes: look from the old last byte.
        start = len(buf) - 1 if buf else 0
        buf += chunk
        if not self._started:
            if not self._strip_bom():
                return []
            start = 0
        end = buf.rfind(b"\n\n", start)
        if end < 0:
            return []
        complete = bytes(buf[:end])
        del buf[: end + 2]
        return self._parse_blocks(complete)

    def flush(self) -> list[SSEEvent]:
        """End of body: an event without its closing empty line is discarded (per spec)."""
        self._buf.clear()
        self._cr_pending = False
        return []

    def _strip_bom(self) -> bool:
        """Drop a leading BOM; False while the first bytes could still be one."""
        buf = self._buf
        if len(buf) < 3 and _BOM.startswith(buf):
            return False
        if buf.startswith(_BOM):
            del buf[:3]
        self._started = True
        return True

    def _parse_blocks(self, complete: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for block in complete.split(b"\n\n"):
            # Fast path: one `data:` line, no other fields.
            if block[:5] == b"data:" and b"\n" not in block:
                value = block[6:] if block[5:6] == b" " else block[5:]
                events.append(SSEEvent(value.decode("utf-8", "replace"), None, self._last_id))
            elif block:
                event = self._parse_lines(block)
                if event is not None:
                    events.append(event)
        return events

    def _parse_lines(self, block: bytes) -> SSEEvent | None:
        data: list[bytes] = []
        event_type: bytes = b""
        for line in block.split(b"\n"):
            # A comment (`:...`) or the empty line opening a block has the name b"",
            # which no branch below takes.
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event_type = value
            elif name == b"id" and b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace") or None
        if not data:
            return None
        text = b"\n".join(data).decode("utf-8", "replace")
        return SSEEvent(text, event_type.decode("utf-8", "replace") or None, self._last_id)
