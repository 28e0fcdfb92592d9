"""The API served inside ``opsctl up``: uvicorn, minus what would cut the shutdown short."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from core.threads import main_thread
from opsctl.up.signals import SIGNALS, StopSignals


def api_server(config: Any, signals: StopSignals, before_shutdown: Callable[[], None] | None = None) -> Any:
    """A ``uvicorn.Server`` whose signals are ``opsctl up``'s (``signals`` sees each one too, so a
    second Ctrl-C while the API shuts down forces the stop of the rest); SIGHUP (the terminal
    closed) stops it gracefully too; a stop asked before it served makes it exit at once; and
    after its graceful shutdown it returns instead of re-raising the signal (``opsctl up`` still
    has its children to stop). ``before_shutdown`` runs (in a thread) once it has been asked to
    stop and before it stops accepting: it still serves meanwhile, for what calls it."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            signals.handle(sig, frame)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if before_shutdown is not None:
                await asyncio.to_thread(before_shutdown)
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if not main_thread():
                yield
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
            if signals.stop.is_set():  # asked before the handlers above were in place
                self.should_exit = True
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server(config)
