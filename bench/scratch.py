"""A benchmark's scratch directory (its database, Redis, logs, model files), removed however the run
ends: returned, raised, Ctrl-C, or ``kill`` / a CI timeout's SIGTERM, which Python would otherwise end
without running ``finally`` blocks (a 1M-chunk tenant bench leaves tens of GB behind). ``keep`` keeps
it for inspection and says where."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


def _unwind(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # SystemExit runs the finally blocks: stacks stop, the directory goes


@contextmanager
def scratch_dir(prefix: str, keep: bool = False, say: Callable[[str], None] = print) -> Iterator[Path]:
    """A new temporary directory named ``prefix…``; SIGTERM unwinds while it exists (main thread)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _unwind) if in_main else None
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
