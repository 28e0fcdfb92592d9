"""Files people hand the core and opsctl (settings, policies, snapshots): read with bounds.

``read_text`` is the one way to read such a file: a regular file only (a FIFO where a file
should be would block the reader forever), at most ``max_bytes`` (a settings or policy file
is a few kilobytes; a gigabyte there is a mistake or an attack, refused unread), UTF-8. Every
failure is a ``FileProblem`` whose ``reason`` the caller puts after the file's name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileProblem(Exception):
    """Why a file handed to opsctl cannot be read: ``reason``, and the ``line`` when there is one."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


def read_text(path: Path, max_bytes: int, what: str = "this kind of file") -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``, or FileProblem.

    Opened without blocking, so a FIFO where a file should be is refused instead of hanging."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileProblem("no such file") from None
    except OSError as exc:
        raise FileProblem(f"unreadable: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileProblem("not a regular file")
        raw = b""
        while len(raw) <= max_bytes and (chunk := os.read(fd, max_bytes + 1 - len(raw))):
            raw += chunk
    except OSError as exc:
        raise FileProblem(f"unreadable: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise FileProblem(f"larger than {max_bytes >> 20} MiB: not {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                          raw[:exc.start].count(b"\n") + 1) from exc
