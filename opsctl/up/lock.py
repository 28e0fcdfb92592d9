"""One ``opsctl up`` per data dir: an exclusive ``flock`` on ``<data dir>/up.lock`` held for the
life of the process. The kernel drops it when the process dies, however it dies (``kill -9``
included), so a dead owner never blocks the next start, and no PID in a file is trusted: the
PID written in the lock file only names the holder in the refusal message.

The descriptor is close-on-exec (and ``Popen`` closes every other descriptor anyway): a child
never inherits the lock, so a leftover child cannot keep it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from core.errors import ServiceUnavailable

LOCK_FILE = "up.lock"


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ServiceUnavailable naming the PID of the ``opsctl up`` that has it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ServiceUnavailable(f"opsctl up is already running on {self.data_dir} (pid {holder}): "
                                     "stop it first (Ctrl-C in its terminal, or kill -TERM that pid)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # the file stays: removing a lock file lets two processes lock two different files


def _holder(fd: int) -> str:
    """The PID the holder wrote (it writes right after locking: give it a moment)."""
    for _ in range(40):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "unknown"
