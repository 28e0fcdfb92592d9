"""The daemon's HTTP server: ``/metrics`` — its own counters (:mod:`opsctl.daemon.metrics`), the
state gauges read from the database at scrape time (:mod:`opsctl.daemon.state_metrics`), the
free space of this host's volumes (:mod:`opsctl.daemon.disks`) and the expiry of the certificates
its connections use (:mod:`opsctl.daemon.certs`) — and
``/readyz``: 200 while a valid policy set is in force, 503 while the replica has none (its set at
start was refused), so a rollout of a bad ConfigMap stops at the first new pod instead of
replacing the replicas that still enforce the previous set. Any other path serves the metrics.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from core.errors import ConfigError

READY = b"ready: a valid policy set is in force\n"
NOT_READY = b"not ready: no valid policy set loaded (opsctl status says why)\n"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request in flight never holds up stop()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line."""


class Exporter:
    def __init__(self, url: str, port: int, host: str, ready: Callable[[], bool] = lambda: True,
                 volumes: Callable[[], dict[str, Path]] = dict, certificates: Callable[[], list[Any]] = list) -> None:
        self.url = url
        self.port = port
        self.host = host
        self.ready = ready
        self.volumes = volumes
        self.certificates = certificates
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._collectors: list[Any] = []

    def _app(self) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
        from prometheus_client import REGISTRY, make_wsgi_app

        metrics_app = make_wsgi_app(REGISTRY)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/readyz":
                ready = self.ready()
                start_response("200 OK" if ready else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [READY if ready else NOT_READY]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        return app

    def start(self) -> None:
        """Serve ``/metrics`` and ``/readyz``; a port that cannot be bound is a config error."""
        from prometheus_client import REGISTRY

        from core.db import connect
        from opsctl.daemon.certs import CertificateCollector
        from opsctl.daemon.disks import DiskCollector
        from opsctl.daemon.state_metrics import StateCollector

        try:
            family, _, _, _, address = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
            server_class = type("Server", (_Server,), {"address_family": family})
            self._server = make_server(str(address[0]), self.port, self._app(), server_class, handler_class=_Quiet)
        except OSError as exc:
            raise ConfigError(f"cannot serve /metrics on port {self.port}: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="opsctl-metrics", daemon=True)
        self._thread.start()
        self._collectors = [StateCollector(lambda: connect(self.url, autocommit=True, connect_timeout=5)),
                            DiskCollector(self.volumes), CertificateCollector(self.certificates)]
        for collector in self._collectors:
            REGISTRY.register(collector)

    def stop(self) -> None:
        """Stop serving, close the listening socket and wait for the server's thread: the port is free
        when this returns (not whenever the garbage collector gets to the server)."""
        from prometheus_client import REGISTRY

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server = self._thread = None
        for collector in self._collectors:
            REGISTRY.unregister(collector)
        self._collectors = []
