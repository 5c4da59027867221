"""Text that UTF-8 can carry: what streamkeep accepts, and what it makes of what it cannot
refuse.

A Python `str` may hold a lone UTF-16 surrogate (U+D800..U+DFFF without its other
half): JSON's `"\\ud800"` escape makes one, and the stdlib `json` (so FastAPI) decodes
it. UTF-8 cannot encode it, so every response, SSE frame and database write of such
text fails: PostgreSQL refuses it in JSONB, and SQLite keeps it as an escape that
breaks every later read of the row. PostgreSQL also refuses U+0000 (NUL) in text and
JSONB. One rule follows, applied on two sides:

- Input is refused. Every string of every request body (chat API, useChat, the
  gateway: contents and their parts, tool messages, system prompts, titles, edits)
  is typed `Text` (or `JSONValue` for free-form JSON), which runs `check_text`: a
  request holding such text is a 4xx naming the field and the position, and
  changes nothing.
- Text streamkeep must keep although it cannot refuse it (a provider's answer, a
  stored row damaged by other means) is repaired: each lone surrogate becomes
  U+FFFD, the replacement character (`repair`, `repair_json`, `loads_repairing`).

Cost on the token path: none. orjson refuses a lone surrogate escape itself, so a
provider's chunk (or a stored JSON value) takes the repairing path only after orjson
has refused the whole document, which normal traffic never makes it do.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

_SURROGATE = re.compile("[\ud800-\udfff]")


def problem(value: str) -> str | None:
    """Why `value` cannot be kept as text, or None when it can."""
    if "\x00" in value:
        return "must not contain the NUL character (U+0000)"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        return (
            f"must be valid Unicode: the lone surrogate U+{code:04X} at character "
            f"{exc.start} cannot be encoded as UTF-8"
        )
    return None


def check_text(value: Any) -> Any:
    """The validator of `Text`: `value`, or ValueError saying what is wrong with it.

    It runs before pydantic's own str validation (which refuses a lone surrogate
    in some schemas, with a vaguer message): anything but a str is left to that."""
    if isinstance(value, str) and (why := problem(value)) is not None:
        raise ValueError(why)
    return value


def check_json(value: Any) -> Any:
    """The validator of `JSONValue`: every string in it, keys included, is `Text`, every
    number finite; the error names where, e.g. `["parts"][0]["text"]: must be valid
    Unicode: ...`."""
    if (found := _json_problem(value, "")) is not None:
        where, why = found
        raise ValueError(f"{where}: {why}" if where else why)
    return value


def _json_problem(value: Any, where: str) -> tuple[str, str] | None:
    if isinstance(value, str):
        why = problem(value)
        return None if why is None else (where, why)
    if isinstance(value, dict):
        for key, item in value.items():
            if (why := problem(key)) is not None:
                return where, f"a key {why}"
            if (found := _json_problem(item, f'{where}["{key}"]')) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _json_problem(item, f"{where}[{i}]")) is not None:
                return found
    elif isinstance(value, float) and not math.isfinite(value):
        # The stdlib's json (which parses bodies) takes NaN; PostgreSQL's jsonb does not.
        return where, "must be a finite number (JSON has no NaN or Infinity)"
    return None


#: A string of a request body: encodable as UTF-8, without NUL.
Text = Annotated[str, BeforeValidator(check_text)]
#: Free-form JSON of a request body (tool schemas, message parts): every string is `Text`.
JSONValue = Annotated[Any, AfterValidator(check_json)]
JSONObject = Annotated[dict[str, Any], AfterValidator(check_json)]


def repair(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def repair_json(value: Any) -> Any:
    """A decoded JSON value with `repair` applied to every string in it, keys included."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        return {repair(k): repair_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repair_json(v) for v in value]
    return value


def loads_repairing(document: str | bytes) -> Any:
    """A JSON document orjson refused, read by the stdlib, which takes lone surrogate
    escapes; each becomes U+FFFD. None when the document is not JSON at all."""
    try:
        return repair_json(json.loads(document))
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return None
