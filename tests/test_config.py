"""The settings file (``opsctl.yaml`` / ``--config``): read with the same bounds as policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Settings, load_settings
from core.errors import ConfigError


def settings_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    path = tmp_path / "opsctl.yaml"
    path.write_text(text)
    monkeypatch.setenv("OPSCTL_CONFIG", str(path))
    return load_settings(with_state=False)


def test_a_settings_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings_from(tmp_path, monkeypatch, "chunk-size: 640\nembedder: hash\n")
    assert loaded.chunk_size == 640


@pytest.mark.timeout(30)  # an alias bomb ran for minutes through yaml.safe_load: fail, do not hang
@pytest.mark.parametrize(("text", "line", "reason"), [
    ("a: &x [*x]\n", 1, "recursive alias"),
    ("chunk_size: 640\nchunk_size: 700\n", 2, "found the key 'chunk_size' twice"),
    ("x: " + "[" * 3000 + "]" * 3000 + "\n", 1, "nested deeper than"),
    ("\n".join([f"l0: &l0 [{', '.join(['1'] * 9)}]"]
               + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]) + "\n", 5,
     "more than 20,000 nodes"),
    ("chunk_size: [1\n", 2, "not a valid settings file"),
])
def test_a_hostile_settings_file_is_a_config_error_with_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, monkeypatch, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'opsctl.yaml'}:{line}: "), message
    assert reason in message and "\n" not in message
