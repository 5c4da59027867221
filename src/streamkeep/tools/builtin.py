"""The tools every server has: `calculator` and `current_time`.

The calculator parses (`ast.parse`) and walks only numbers, `+ - * / ** %`, unary
signs and parentheses; nothing is ever `eval`ed. Its input is what a model (that is,
anyone who can write a prompt) sends, so it is bounded: 1,000 characters, results of at
most 1,000 digits, a power refused before it is computed when its result would be larger.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from streamkeep.tools.base import Tool, ToolError
from streamkeep.tools.python import python_tool

Number = int | float

MAX_EXPRESSION = 1000
MAX_DIGITS = 1000
_MAX_INT = 10**MAX_DIGITS
# Beyond 64 bits a JSON integer is not portable (orjson refuses it): the exact digits
# are returned as a string instead.
_MAX_JSON_INT = 2**63 - 1


def _divide(a: Number, b: Number) -> Number:
    # Exact integer quotients stay integers (6 / 3 is 2); float division of two huge
    # integers would lose them.
    if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
        return a // b
    return a / b


def _power(base: Number, exponent: Number) -> Number:
    # An integer power is exact and its size is known in advance: refuse it before
    # computing it (9 ** 9 ** 9 would take minutes and gigabytes). Float powers
    # overflow with OverflowError on their own.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and (exponent > MAX_DIGITS * 4 or exponent * math.log10(abs(base)) > MAX_DIGITS)
    ):
        raise ToolError(f"the result of ** is too large: more than {MAX_DIGITS} digits")
    result: Number = base**exponent
    return result


_BINARY: dict[type[ast.operator], tuple[str, Callable[[Number, Number], Number]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", _divide),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", _power),
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_REFUSED: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attributes are not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "'and' and 'or' are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.IfExp: "conditionals are not allowed",
}


def calculator(
    expression: Annotated[
        str,
        Field(
            max_length=MAX_EXPRESSION,
            description="e.g. (2 + 3) * 4 / 7, or 2 ** 0.5; numbers may be written 1e3",
        ),
    ],
) -> int | float | str:
    """Evaluate an arithmetic expression: numbers, + - * / ** % and parentheses.

    Returns the number: an integer when exact, else a float (integers beyond 64 bits as
    a string of digits). Nothing but arithmetic is understood: no names or functions.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"syntax error: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL, absurd nesting
        raise ToolError(f"cannot parse the expression: {str(exc) or type(exc).__name__}") from None
    _check(tree)
    result = _evaluate(tree.body)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    if isinstance(result, int) and abs(result) > _MAX_JSON_INT:
        return str(result)
    return result


def current_time(
    timezone: Annotated[
        str,
        Field(
            max_length=64,
            description="an IANA time zone name, e.g. Europe/Paris or America/New_York",
        ),
    ] = "UTC",
) -> str:
    """The current date and time in a time zone, in ISO 8601 with its UTC offset."""
    try:
        zone = ZoneInfo(timezone)
    # ValueError: not a key ("../x") or not a zone file; OSError: a path the system refuses
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ToolError(f"unknown time zone {timezone!r} (expected an IANA name)") from None
    return datetime.now(zone).isoformat(timespec="seconds")


def builtin_tools() -> list[Tool]:
    return [
        python_tool(calculator, source="builtin"),
        python_tool(current_time, source="builtin"),
    ]


def _check(tree: ast.Expression) -> None:
    """Refuse, before computing anything, every node that is not arithmetic on numbers."""
    for node in ast.walk(tree.body):
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise ToolError(f"unsupported: the operator {_source(node.op)} is not allowed")
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise ToolError(f"unsupported: the operator {_source(node.op)} is not allowed")
        elif isinstance(node, ast.Constant):
            _check_number(node.value)
        elif isinstance(node, ast.Name):
            raise ToolError(f"unsupported: names are not allowed ({node.id!r})")
        elif not isinstance(node, ast.operator | ast.unaryop):
            why = _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
            raise ToolError(f"unsupported: {why}")


def _check_number(value: object) -> None:
    if type(value) not in (int, float):  # bool, str, complex (1j), None, ...
        raise ToolError(f"unsupported: only numbers are allowed, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # 1e999
        raise ToolError("a number is too large")
    if isinstance(value, int) and abs(value) >= _MAX_INT:  # 0xfff...
        raise ToolError(f"a number is too large: more than {MAX_DIGITS} digits")


def _evaluate(root: ast.expr) -> Number:
    # With an explicit stack rather than recursion: 1,000 characters nest up to ~1,000
    # deep ("------1"), which would exhaust Python's recursion limit.
    values: list[Number] = []
    todo: list[tuple[ast.expr, bool]] = [(root, False)]
    while todo:
        node, operands_done = todo.pop()
        if isinstance(node, ast.Constant):
            values.append(cast(Number, node.value))  # a number: `_check` saw to it
        elif isinstance(node, ast.UnaryOp):
            if operands_done:
                values.append(_UNARY[type(node.op)](values.pop()))
            else:
                todo += [(node, True), (node.operand, False)]
        elif isinstance(node, ast.BinOp):
            if operands_done:
                right, left = values.pop(), values.pop()
                values.append(_apply(node.op, left, right))
            else:
                todo += [(node, True), (node.right, False), (node.left, False)]
    return values[0]


def _apply(op: ast.operator, left: Number, right: Number) -> Number:
    symbol, function = _BINARY[type(op)]
    try:
        result = function(left, right)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError(f"overflow: the result of {symbol} is too large") from None
    if isinstance(result, complex):  # (-8) ** 0.5
        raise ToolError(f"the result of {symbol} is not a real number")
    if isinstance(result, float) and not math.isfinite(result):
        raise ToolError(f"overflow: the result of {symbol} is too large")
    if isinstance(result, int) and abs(result) >= _MAX_INT:
        raise ToolError(f"the result of {symbol} is too large: more than {MAX_DIGITS} digits")
    return result


def _source(node: ast.AST) -> str:
    symbols = {
        ast.FloorDiv: "//",
        ast.MatMult: "@",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitOr: "|",
        ast.BitAnd: "&",
        ast.BitXor: "^",
        ast.Invert: "~",
        ast.Not: "not",
    }
    return symbols.get(type(node), type(node).__name__)
