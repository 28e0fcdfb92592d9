"""The API served inside ``opsctl up``: uvicorn, minus what would cut the shutdown short."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from core.procs import main_thread


def api_server(config: Any) -> Any:
    """A ``uvicorn.Server`` that, after its graceful shutdown, returns instead of re-raising the
    signal (``opsctl up`` still has its children to stop); SIGHUP (the terminal closed) stops it
    gracefully too."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if not main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(config)
