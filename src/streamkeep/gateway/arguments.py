"""A tool call's argument text on its way to a client, as every gateway stream sends it.

A client joins a call's argument deltas; what it ends with must be the arguments the
whole answer carries (`chunks.openai_arguments`). Text that opens with `{` streams as
it comes; any other (`null`, none at all, JSON that is no object) is held until the
call is complete and goes out once, normalised.
"""

from __future__ import annotations


class HeldArguments:
    """One call's argument text: streamed live once it opens with `{`, else held."""

    __slots__ = ("_sent", "held", "live", "opened")

    def __init__(self) -> None:
        self.held: list[str] = []
        self.opened = False  # some text other than blanks came
        self.live = False
        self._sent: list[str] = []

    def feed(self, piece: str) -> str | None:
        """The text to send now for this delta, or None to send nothing yet."""
        if not piece:
            return None
        if not self.live:
            self.held.append(piece)
            if self.opened or not piece.strip():
                return None  # not an object, or nothing but blanks yet: wait for the end
            self.opened = True
            if piece.lstrip()[0] != "{":
                return None
            self.live = True
            piece = "".join(self.held)
            self.held.clear()
        self._sent.append(piece)
        return piece

    @property
    def sent(self) -> str:
        """Everything sent live so far."""
        return "".join(self._sent)
