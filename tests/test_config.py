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


def test_a_settings_file_is_read_with_a_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings file is a few lines: one over 1 MiB is refused unread, not parsed."""
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, monkeypatch, "chunk_size: 640\n" + "#" * (2 << 20) + "\n")
    assert str(info.value) == f"{tmp_path / 'opsctl.yaml'}: cannot read: larger than 1 MiB: not a settings file"


@pytest.mark.parametrize("explicit", [True, False])
def test_a_settings_path_that_is_not_a_file_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             explicit: bool) -> None:
    """A FIFO (or a directory) where opsctl.yaml should be: refused at once, never read (a FIFO
    would block the reader) and never mistaken for a missing file or silently skipped."""
    import os

    path = tmp_path / "opsctl.yaml"
    os.mkfifo(path)
    if explicit:
        monkeypatch.setenv("OPSCTL_CONFIG", str(path))
    else:
        monkeypatch.delenv("OPSCTL_CONFIG", raising=False)
        monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(with_state=False)
    assert str(info.value) == f"{path if explicit else 'opsctl.yaml'}: cannot read: not a regular file"


def test_a_missing_explicit_settings_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"nope.yaml \(OPSCTL_CONFIG\) does not exist"):
        load_settings(with_state=False)


def test_opsctl_files_still_reads_as_before(tmp_path: Path) -> None:
    """The bounded reader lives in core (core.config uses it); opsctl's callers import it as before."""
    from core import files as core_files
    from opsctl import files

    assert files.read_text is core_files.read_text and files.FileProblem is core_files.FileProblem
    path = tmp_path / "p.yaml"
    path.write_bytes(b"a: 1\n\xff\n")
    with pytest.raises(files.FileProblem) as info:
        files.read_text(path, 100, "a policy file")
    assert (info.value.reason.startswith("not UTF-8 text"), info.value.line) == (True, 2)
