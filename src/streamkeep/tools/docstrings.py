"""What a Python tool's docstring tells the model: its summary and its parameters.

Only the two common layouts are read, simply; anything else is left as prose:

    Google:  Args:                       NumPy:  Parameters
                 city (str): the city.           ----------
                     More about city.            city : str
                                                     the city.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

_GOOGLE_HEADER = re.compile(r"(Args|Arguments|Parameters|Params|Keyword Args):")
_GOOGLE_ENTRY = re.compile(r"\**(\w+)\s*(?:\([^)]*\))?\s*:(.*)")
_NUMPY_RULE = re.compile(r"-{3,}")
_NUMPY_ENTRY = re.compile(r"\**(\w+)(?:\s*:.*)?")


@dataclass(slots=True)
class Docstring:
    #: the first paragraph, on one line
    summary: str = ""
    #: parameter name -> its description, on one line
    params: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    return Docstring(summary=_summary(lines), params=_google(lines) or _numpy(lines))


def _summary(lines: list[str]) -> str:
    first: list[str] = []
    for line in lines:
        if not line.strip():
            break
        first.append(line.strip())
    text = " ".join(first)
    return "" if _GOOGLE_HEADER.fullmatch(text) or text == "Parameters" else text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google(lines: list[str]) -> dict[str, str]:
    start = next((i for i, line in enumerate(lines) if _GOOGLE_HEADER.fullmatch(line.strip())), -1)
    if start < 0:
        return {}
    header = _indent(lines[start])
    params: dict[str, list[str]] = {}
    entry_indent: int | None = None
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= header:
            break  # the next section
        if entry_indent is None:
            entry_indent = indent
        match = _GOOGLE_ENTRY.fullmatch(line.strip())
        if indent == entry_indent and match:
            current = params.setdefault(match[1], [])
            current.append(match[2].strip())
        elif current is not None:
            current.append(line.strip())
    return _joined(params)


def _numpy(lines: list[str]) -> dict[str, str]:
    start = next((i for i in range(len(lines) - 1) if _numpy_section(lines, i, "Parameters")), -1)
    if start < 0:
        return {}
    base = _indent(lines[start])
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        if _indent(line) > base:
            if current is not None:
                current.append(line.strip())
        elif _numpy_section(lines, i):
            break  # the next section ("Returns", ...)
        else:
            match = _NUMPY_ENTRY.fullmatch(line.strip())
            current = params.setdefault(match[1], []) if match else None
    return _joined(params)


def _numpy_section(lines: list[str], i: int, title: str | None = None) -> bool:
    """Whether line `i` is a section's title, underlined by the next one."""
    return (
        i + 1 < len(lines)
        and (title is None or lines[i].strip() == title)
        and _NUMPY_RULE.fullmatch(lines[i + 1].strip()) is not None
    )


def _joined(params: dict[str, list[str]]) -> dict[str, str]:
    return {name: " ".join(p for p in parts if p) for name, parts in params.items()}
