"""What the chat commands print reads as the text it is: ids stay whole."""

from __future__ import annotations

from rich.markup import escape

from streamkeep.cli.term import consoles


def test_an_id_ending_in_digits_prints_as_one_run() -> None:
    # CI once saw `chat_USC1c2ssJOgOQP3VNV-0` printed with its `0` styled as a number:
    # the command under "for the rest" could no longer be found, or copied, whole.
    command = "streamkeep chat --chat chat_USC1c2ssJOgOQP3VNV-0 continue"
    for console in consoles():
        text = console.render_str(f"[dim]· for the rest: {escape(command)}[/]")
        start = text.plain.index(command)
        inside = range(start + 1, start + len(command))
        assert not [s for s in text.spans if s.start in inside or s.end in inside]
