"""The README's library example runs as written, with no warning under `-X dev`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The README's Python code block that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    return block


@pytest.mark.slow  # loads the embedded model and generates a sentence
def test_the_library_example_runs_and_warns_of_nothing(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    script = tmp_path / "ask.py"
    script.write_text(readme_block("asyncio.run(ask("))
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # -W error makes a warning fail the script, or (at exit) print "Exception ignored
    # ... ResourceWarning". Debug mode may also log a slow step: timing, not a fault.
    assert "Warning" not in done.stderr, done.stderr
    assert "Usage(input_tokens=" in done.stdout and "estimated=False" in done.stdout
