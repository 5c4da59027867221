"""The code's shape, as rules a change cannot break unnoticed.

Layers import downwards only: a module never imports, directly or through others, a
module that imports it back, and neither does a package (`streamkeep.generation` and
`streamkeep.scaleout`, say). Imports made only for type checking count too: a cycle at
the type level is still two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "streamkeep"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        base = module.split(".")
        if not is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # `from a import b` may name the submodule a.b or a name defined in a.
    return {target} | {f"{target}.{alias.name}" for alias in node.names}


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found |= imported_names(node, module, is_package)
        graph[module] = {name for name in found if name in modules and name != module}
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the top-level packages (`streamkeep.llm`, ...)."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(top(module), set()).update(
            top(t) for t in targets if top(t) != top(module)
        )
    return packages


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph(source_modules())) == []


def test_no_package_imports_itself_back() -> None:
    assert cycles(package_graph(import_graph(source_modules()))) == []


# The README's architecture section draws these rows: a package imports only from the
# rows below its own, and within its row only along the edges named here.
LAYERS = [
    {"__main__", "cli", "client"},
    {"server", "gateway"},
    {"http", "scaleout"},
    {"generation"},
    {"tools"},
    {"llm", "store", "sse"},
    {"text", "config", "logs", "telemetry", ""},  # "": the package's own __init__
]
SAME_ROW = {("__main__", "cli"), ("cli", "client"), ("server", "gateway")}


def test_packages_import_only_from_lower_layers() -> None:
    row = {name: depth for depth, names in enumerate(LAYERS) for name in names}
    short = {f"{PACKAGE}.{name}" if name else PACKAGE: name for name in row}
    graph = package_graph(import_graph(source_modules()))
    assert set(graph) == set(short), "a new package needs its row in LAYERS (and the README)"
    upward = sorted(
        (short[pkg], short[dep])
        for pkg, deps in graph.items()
        for dep in deps
        if row[short[dep]] < row[short[pkg]]
        or (row[short[dep]] == row[short[pkg]] and (short[pkg], short[dep]) not in SAME_ROW)
    )
    assert upward == []


def test_no_streamkeep_module_is_imported_by_name_at_run_time() -> None:
    """importlib would hide an import from the two tests above."""
    hidden = []
    for module, path in source_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
                in {"import_module", "__import__"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).startswith(PACKAGE)
            ):
                hidden.append(f"{module}: {node.args[0].value}")
    assert hidden == []


def test_streams_are_closed_by_type_not_by_probing() -> None:
    probes = []
    for module, path in source_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"getattr", "hasattr"}
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in {"aclose", "close"}
            ):
                probes.append(f"{module}:{node.lineno}")
    assert probes == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert sorted(cycles(graph)) == expected


def test_the_import_graph_sees_relative_type_only_and_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "streamkeep"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from .base import Base\n")
    (pkg / "low" / "base.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from streamkeep.high import H\n"
    )
    (pkg / "high.py").write_text("from streamkeep import low\n")
    modules = {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
        for p in pkg.rglob("*.py")
    }
    graph = import_graph(modules)
    assert graph["streamkeep.low"] == {"streamkeep.low.base"}
    assert graph["streamkeep.low.base"] == {"streamkeep.high"}
    assert graph["streamkeep.high"] == {"streamkeep", "streamkeep.low"}
    assert cycles(graph) == [["streamkeep.high", "streamkeep.low", "streamkeep.low.base"]]
