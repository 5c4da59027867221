"""The store's modules import each name from the module that defines it, never from
the package (`streamkeep.store`), whose `__init__` imports them all: such an import
is a cycle through the package."""

from __future__ import annotations

import ast
from pathlib import Path

import streamkeep.store

PACKAGE = Path(streamkeep.store.__file__).parent


def imports_of_the_package(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "streamkeep.store":
            found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno}" for a in node.names if a.name == "streamkeep.store"
            ]
    return found


def test_no_store_module_imports_from_the_package() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE]
    assert len(modules) > 10
    assert [hit for path in modules for hit in imports_of_the_package(path)] == []
