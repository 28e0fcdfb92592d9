"""A TCP proxy in front of the tests' S3 server (``s3_server`` in conftest), to make the store
fail the ways a real one does: ``down()`` closes the port and every connection (the store is
unreachable: connections are refused), ``up()`` listens again on the same port; ``stall(pattern)``
holds the next request whose bytes contain ``pattern`` half-way (``stalled`` is set once the
server got part of its body) until ``release()``, which cuts it off: the server sees a request
that never finished, as when the uploader is killed in the middle of it."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Proxy:
    upstream_port: int
    port: int = field(default_factory=free_port)
    forward: int = 64 * 1024  # bytes of a stalled request the server gets
    stalled: threading.Event = field(default_factory=threading.Event)
    _pattern: bytes | None = None
    _released: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None
    _open: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="s3-proxy", daemon=True).start()

    def down(self) -> None:
        """Refuse connections and cut the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def stall(self, pattern: bytes) -> None:
        self.stalled.clear()
        self._released.clear()
        self._pattern = pattern

    def release(self) -> None:
        self._released.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._open |= {client, upstream}
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        sent = 0
        holding = False
        with contextlib.suppress(OSError), client, upstream:
            while data := client.recv(65536):
                if not holding and self._pattern is not None and self._pattern in data:
                    holding, self._pattern = True, None
                if not holding:
                    upstream.sendall(data)
                    continue
                room = self.forward - sent
                if room > 0:
                    upstream.sendall(data[:room])
                    sent += min(room, len(data))
                if sent >= self.forward:
                    self.stalled.set()
                    self._released.wait()
                    return  # closes both sides: the request is cut off half-way

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
