"""Settings: flags over the environment over `streamkeep.toml`."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkeep.config import load_settings


def test_replay_window_comes_from_the_environment_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text("replay_window = 5\n")
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    assert load_settings().replay_window == 5.0
    monkeypatch.setenv("STREAMKEEP_REPLAY_WINDOW", "2.5")
    assert load_settings().replay_window == 2.5
    assert load_settings(replay_window=1).replay_window == 1.0


def test_generation_retention_is_read_as_the_replay_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text("generation_retention = 7\n")  # the setting's earlier name
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    assert load_settings().replay_window == 7.0
    assert load_settings(generation_retention=0.0).replay_window == 0.0


def test_a_negative_replay_window_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_window"):
        load_settings(replay_window=-1)
