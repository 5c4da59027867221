"""`streamkeep serve --help` says where the data goes, and `--help` lists `doctor`."""

from __future__ import annotations

import pytest

from streamkeep.cli import main


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_serve_help_says_where_data_goes(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(_help(capsys, "serve").split())  # argparse rewraps the text
    assert "Where data goes:" in out
    assert "default ./.streamkeep, relative to the directory you start the server in" in out
    assert "logs/embedded-runtime.log" in out and "~/.cache/streamkeep/wheels" in out


def test_the_command_lists_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    assert "doctor" in _help(capsys)
    assert "--timeout" in _help(capsys, "doctor")
