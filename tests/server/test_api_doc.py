"""docs/api.md, the API reference, names every operation the app serves, and no other.

An operation is documented by a heading "### `METHOD /path`" (path parameters spelt as
in the OpenAPI schema), so a new route without a section, or a section whose route is
gone, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamkeep.config import load_settings
from streamkeep.server import create_app

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_HEADING = re.compile(r"^#{2,4} `([A-Z]+) (/\S*)`$", re.MULTILINE)
_METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def schema_operations() -> set[str]:
    schema = create_app(load_settings()).openapi()
    return {
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method in item
        if method in _METHODS
    }


def documented_operations() -> set[str]:
    return {f"{m} {p}" for m, p in _HEADING.findall(API_DOC.read_text(encoding="utf-8"))}


def test_every_operation_of_the_openapi_schema_has_a_section() -> None:
    missing = schema_operations() - documented_operations()
    assert not missing, f"add a '### `METHOD /path`' section to docs/api.md for: {missing}"


def test_every_documented_operation_exists() -> None:
    extra = documented_operations() - schema_operations()
    assert not extra, f"docs/api.md describes operations the app does not serve: {extra}"
