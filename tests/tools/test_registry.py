"""Python tools by decorator and by import path (the `tools.python` settings)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from streamkeep.tools import PythonTool, load_python_tools, registered_tools, tool
from tests.tools import sample_tools

SAMPLE = "tests.tools.sample_tools"


async def test_the_bare_decorator_makes_and_registers_a_tool() -> None:
    @tool
    def registry_bare_double(n: int) -> int:
        """Double a number."""
        return 2 * n

    assert isinstance(registry_bare_double, PythonTool)
    assert registry_bare_double in registered_tools()
    assert await registry_bare_double.call({"n": 4}) == 8


async def test_the_decorator_takes_a_name_a_description_and_a_timeout() -> None:
    @tool(name="registry_named", description="Say hello.", timeout=7)
    async def hello(who: str = "world") -> str:
        return f"hello {who}"

    assert (hello.name, hello.description, hello.timeout) == ("registry_named", "Say hello.", 7)
    assert [t for t in registered_tools() if t.name == "registry_named"] == [hello]
    assert await hello.call({}) == "hello world"


def test_two_functions_cannot_register_one_name() -> None:
    with pytest.raises(ValueError, match="two tools are named 'sample_shout'"):

        @tool(name="sample_shout")
        def shout(text: str) -> str:
            """Another shout."""
            return text


def test_a_module_imported_again_replaces_its_tools() -> None:
    module = importlib.reload(sample_tools)
    shouts = [t for t in registered_tools() if t.name == "sample_shout"]
    assert shouts == [module.shout]


async def test_entries_load_plain_functions_decorated_tools_and_class_attributes() -> None:
    add, shout, metres = load_python_tools(
        [f"{SAMPLE}:add", f"{SAMPLE}:shout", f"{SAMPLE}:Units.metres"]
    )
    assert (add.name, add.source) == ("add", "python")
    assert await add.call({"a": 2}) == 3
    # A decorated function is the tool it already is, not a second one.
    assert shout is importlib.import_module(SAMPLE).shout
    assert await shout.call({"text": "hi"}) == "HI"
    assert await metres.call({"feet": 10}) == pytest.approx(3.048)


@pytest.mark.parametrize(
    ("entry", "error", "expected"),
    [
        ("tests.tools.sample_tools", ValueError, "expected 'package.module:function'"),
        (f"{SAMPLE}:", ValueError, "expected 'package.module:function'"),
        (":add", ValueError, "expected 'package.module:function'"),
        (f"{SAMPLE}:add()", ValueError, "expected 'package.module:function'"),
        ("tests.tools.absent:add", ImportError, "no module named 'tests.tools.absent'"),
        ("streamkeep_absent.tools:add", ImportError, "no module named 'streamkeep_absent'"),
        (f"{SAMPLE}:subtract", ImportError, f"module '{SAMPLE}' has no 'subtract'"),
        (f"{SAMPLE}:NOT_CALLABLE", ValueError, "'NOT_CALLABLE' is not callable"),
        (f"{SAMPLE}:untyped", ValueError, "parameter 'a' has no type annotation"),
    ],
)
def test_a_bad_entry_says_which_and_why(entry: str, error: type[Exception], expected: str) -> None:
    with pytest.raises(error) as caught:
        load_python_tools([f"{SAMPLE}:add", entry])
    assert f"tools.python entry {entry!r}" in str(caught.value)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import streamkeep_absent_dependency\n", "No module named 'streamkeep_absent_dependency'"),
        ("raise RuntimeError('broken on purpose')\n", "RuntimeError: broken on purpose"),
        ("def f(:\n", "SyntaxError"),
    ],
)
def test_a_module_that_fails_to_import_says_why(
    source: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"streamkeep_tools_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=f"importing '{name}' failed: .*{expected}"):
        load_python_tools([f"{name}:f"])
