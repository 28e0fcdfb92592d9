"""Temp dirs outside pytest's own, removed when the session ends.

Imported as ``tests.tmpdirs`` by conftest and by the test modules alike: pytest loads conftest as
the module ``conftest``, the tests import ``tests.conftest``, so a registry kept in conftest itself
would be two lists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

KEEP_TEST_DIRS_ENV = "OPSCTL_KEEP_TEST_DIRS"  # set (to anything but "") to keep them for a look afterwards
_MADE: list[Path] = []


def outside_pytest_tmp(prefix: str) -> Path:
    """A private temp dir outside pytest's own (another pytest session may chmod that one 0700,
    which locks out PostgreSQL's system user). Pytest does not clean it, so the session does when
    it ends (a full run made about 1.3 GB of them: PostgreSQL data dirs, WAL archives, backups)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _MADE.append(path)
    return path


def remove_outside_dirs() -> list[Path]:
    """Remove this process's dirs (each xdist worker removes its own), unless ``OPSCTL_KEEP_TEST_DIRS``
    is set; returns what was removed."""
    if os.environ.get(KEEP_TEST_DIRS_ENV):
        return []
    removed = []
    while _MADE:
        path = _MADE.pop()
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
