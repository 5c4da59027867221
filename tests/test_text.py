"""Text UTF-8 can carry: what is refused, and how what cannot be refused is repaired."""

from __future__ import annotations

import re

import pytest

from streamkeep.text import check_json, check_text, loads_repairing, problem, repair


@pytest.mark.parametrize(
    "text",
    ["", "plain", "é ü 漢字 😀", "\ud83d\ude00".encode("utf-16", "surrogatepass").decode("utf-16")],
)
def test_text_utf8_can_encode_is_accepted(text: str) -> None:
    assert problem(text) is None
    assert check_text(text) is text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a \ud800 b", "lone surrogate U+D800 at character 2"),
        ("\udfff", "lone surrogate U+DFFF at character 0"),
        ("é\udc00", "lone surrogate U+DC00 at character 1"),
        ("a\x00b", "NUL"),
    ],
)
def test_text_utf8_cannot_encode_or_with_nul_is_refused(text: str, expected: str) -> None:
    why = problem(text)
    assert why is not None and expected in why
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_text(text)


def test_check_text_leaves_other_types_to_pydantic() -> None:
    assert check_text(5) == 5


def test_json_values_name_where_the_bad_text_is() -> None:
    ok = {"a": [1, "é", {"b": None}], "c": True}
    assert check_json(ok) is ok
    with pytest.raises(ValueError, match=r'^\["a"\]\[1\]\["b"\]: must be valid Unicode'):
        check_json({"a": [0, {"b": "x\ud800"}]})
    with pytest.raises(ValueError, match=r'^\["a"\]: a key must not contain the NUL'):
        check_json({"a": {"k\x00": 1}})
    with pytest.raises(ValueError, match=r"^must be valid Unicode"):
        check_json("\udc00")
    with pytest.raises(ValueError, match=r'^\["a"\]\[1\]: must be a finite number'):
        check_json({"a": [1.5, float("nan")]})


def test_repair_replaces_each_lone_surrogate() -> None:
    assert repair("a \ud800 b \udfff") == "a \ufffd b \ufffd"
    text = "plain é 😀"
    assert repair(text) is text
    assert repair("ascii") == "ascii"


def test_loads_repairing_reads_what_orjson_refuses() -> None:
    assert loads_repairing('{"t": "a \\ud800 b", "\\udc00": ["\\ud83d\\ude00"]}') == {
        "t": "a \ufffd b",
        "\ufffd": ["😀"],  # a pair of escapes is one character, as JSON says
    }
    assert loads_repairing(b'["\\udbff"]') == ["\ufffd"]
    assert loads_repairing("{not json") is None
    assert loads_repairing(b"\xff\xfe") is None
