"""`title_from`: one line, cut with an ellipsis, nothing for blank text."""

from __future__ import annotations

from streamkeep.generation.titles import TITLE_CHARS, title_from


def test_whitespace_becomes_single_spaces() -> None:
    assert title_from("  Hello\n\tthere   world ") == "Hello there world"


def test_long_text_is_cut_to_the_limit_with_an_ellipsis() -> None:
    text = "word " * 40
    title = title_from(text)
    assert title is not None and len(title) == TITLE_CHARS and title.endswith("…")
    assert title_from("x" * TITLE_CHARS) == "x" * TITLE_CHARS


def test_blank_text_gives_no_title() -> None:
    assert title_from(" \n\t ") is None
    assert title_from("") is None
