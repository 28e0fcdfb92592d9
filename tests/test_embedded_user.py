"""The embedded servers' system user, when two processes (two xdist workers, two `opsctl up`) add it at once."""

from __future__ import annotations

import pwd
import shutil
import subprocess

import pytest

from core.embedded import _ensure_system_user


@pytest.fixture(autouse=True)
def _useradd() -> None:
    """The embedded servers need `useradd` (Debian's passwd) as root: its absence fails, never skips."""
    assert shutil.which("useradd"), "useradd must be installed (Debian's passwd package): this test never skips"


def test_a_user_another_process_has_just_added_is_used_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our lookup misses the user, the other process adds it, our useradd then fails with "exists"."""
    real = pwd.getpwnam
    looked: list[str] = []

    def not_yet_the_first_time(name: str) -> pwd.struct_passwd:
        looked.append(name)
        if len(looked) == 1:
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", not_yet_the_first_time)
    assert _ensure_system_user("nobody") == (real("nobody").pw_uid, real("nobody").pw_gid)
    assert looked == ["nobody", "nobody"]


def test_a_user_that_cannot_be_added_is_still_an_error() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _ensure_system_user("not a valid name!")
    assert failed.value.cmd[0] == "useradd" and failed.value.returncode != 0
