"""The built-in tools: a calculator that only does arithmetic, and the current time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streamkeep.tools import Tool, ToolArgumentsError, ToolError
from streamkeep.tools.builtin import builtin_tools


def builtin(name: str) -> Tool:
    [found] = [t for t in builtin_tools() if t.name == name]
    assert found.source == "builtin"
    return found


async def calculate(expression: str) -> Any:
    return await builtin("calculator").call({"expression": expression})


# --- calculator ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2+3*4", 14),
        ("(1+2)*3", 9),
        ("-2**2", -4),  # as in Python: ** binds tighter than the sign
        ("2**3**2", 512),  # ** is right-associative
        ("(-2)**2", 4),
        ("7%3", 1),
        ("-7 % 3", 2),
        ("7.5 % 2", 1.5),
        ("2**-1", 0.5),
        ("1/3", 1 / 3),
        ("6/3", 2),  # an exact quotient stays an integer
        ("10 - 2 - 3", 5),
        ("+-+1", -1),
        ("0.1 + 0.2", 0.1 + 0.2),
        ("1e3", 1000),
        ("2.5e-3 * 4", 0.01),
        ("0.5 * 4", 2),
        ("2 ** 0.5", 2**0.5),
        ("1_000 + 1", 1001),
        ("  ( 1 +\t2 ) ", 3),
        ("2**62", 2**62),
        ("-" * 999 + "1", -1),  # nesting a recursive walk could not take
        ("1+" * 499 + "1", 500),
    ],
)
async def test_arithmetic(expression: str, expected: int | float) -> None:
    result = await calculate(expression)
    assert result == expected
    assert type(result) is type(expected)


async def test_integers_beyond_64_bits_come_back_as_exact_digits() -> None:
    assert await calculate("2**3000") == str(2**3000)
    assert await calculate("-(2**64)") == str(-(2**64))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("x", "names are not allowed ('x')"),
        ("pi * 2", "names are not allowed ('pi')"),
        ("abs(-1)", "function calls are not allowed"),
        ("__import__('os').system('true')", "function calls are not allowed"),
        ("(1).real", "attributes are not allowed"),
        ("[1, 2][0]", "subscripts are not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("1 < 2", "comparisons are not allowed"),
        ("1 == 1", "comparisons are not allowed"),
        ("1 and 2", "'and' and 'or' are not allowed"),
        ("1 if 2 else 3", "conditionals are not allowed"),
        ("'a' * 3", "only numbers are allowed, not 'a'"),
        ("b'a'", "only numbers are allowed, not b'a'"),
        ("True + 1", "only numbers are allowed, not True"),
        ("1j * 1j", "only numbers are allowed, not 1j"),
        ("7 // 2", "the operator // is not allowed"),
        ("1 << 3", "the operator << is not allowed"),
        ("6 & 3", "the operator & is not allowed"),
        ("~1", "the operator ~ is not allowed"),
        ("not 1", "the operator not is not allowed"),
        ("(1, 2)", "Tuple is not allowed"),
        ("[x for x in (1,)]", "ListComp is not allowed"),
        ("f'{1}'", "JoinedStr is not allowed"),
        ("(y := 2)", "NamedExpr is not allowed"),
    ],
)
async def test_anything_but_arithmetic_is_refused(expression: str, expected: str) -> None:
    with pytest.raises(ToolError, match="unsupported: ") as caught:
        await calculate(expression)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("", "syntax error"),
        ("1 +", "syntax error"),
        ("1; 2", "syntax error"),
        ("import os", "syntax error"),
        ("1\x00", "null bytes"),
        ("(" * 300 + "1" + ")" * 300, "too many nested parentheses"),
    ],
)
async def test_what_does_not_parse_is_a_syntax_error(expression: str, expected: str) -> None:
    with pytest.raises(ToolError, match=re.escape(expected)):
        await calculate(expression)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1/0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("1.5 / (2 - 2)", "division by zero"),
        ("0 ** -1", "division by zero"),
    ],
)
async def test_division_by_zero(expression: str, expected: str) -> None:
    with pytest.raises(ToolError, match=re.escape(expected)):
        await calculate(expression)


@pytest.mark.timeout(10)  # unguarded, the first of these would take hours and gigabytes
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("9**9**9", "too large"),
        ("(-9)**9**9", "too large"),
        ("2**(10**100)", "too large"),
        ("10**1000", "more than 1000 digits"),
        ("10**999 * 10", "result of * is too large"),
        ("(10**500)**2", "too large"),
        ("0x" + "f" * 900, "a number is too large"),
        ("1e999", "a number is too large"),
        ("2.0 ** 10000", "overflow"),
        ("1e308 * 10", "overflow"),
        ("10**400 * 1.5", "overflow"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
async def test_results_too_large_are_refused(expression: str, expected: str) -> None:
    with pytest.raises(ToolError, match=re.escape(expected)):
        await calculate(expression)


async def test_powers_of_one_zero_and_minus_one_have_no_size_limit() -> None:
    assert await calculate("1 ** (10**999)") == 1
    assert await calculate("(-1) ** (10**999 + 1)") == -1
    assert await calculate("0 ** (10**999)") == 0


async def test_over_long_input_is_refused_before_parsing() -> None:
    with pytest.raises(ToolArgumentsError, match="expression: String should have at most 1000"):
        await calculate("1+" * 500 + "1")


# --- current_time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "zone", ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
)
async def test_current_time_in_a_zone(zone: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    text = await builtin("current_time").call({"timezone": zone})
    after = datetime.now(UTC)
    now = datetime.fromisoformat(text)
    assert now.utcoffset() == ZoneInfo(zone).utcoffset(now)
    assert before <= now <= after


async def test_current_time_defaults_to_utc() -> None:
    now = datetime.fromisoformat(await builtin("current_time").call({}))
    assert now.utcoffset() == timedelta(0)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc", "", "../../etc/passwd", "zone.tab"])
async def test_an_unknown_zone_is_named(zone: str) -> None:
    with pytest.raises(ToolError, match=re.escape(f"unknown time zone {zone!r}")):
        await builtin("current_time").call({"timezone": zone})
