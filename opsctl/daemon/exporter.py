"""The daemon's ``/metrics`` server: its own counters (:mod:`opsctl.daemon.metrics`) and the state
gauges read from the database at scrape time (:mod:`opsctl.daemon.state_metrics`)."""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError


class Exporter:
    def __init__(self, url: str, port: int, host: str) -> None:
        self.url = url
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: Any = None
        self._collector: Any = None

    def start(self) -> None:
        """Serve ``/metrics``; a port that cannot be bound is a config error."""
        from prometheus_client import REGISTRY, start_http_server

        from core.db import connect
        from opsctl.daemon.state_metrics import StateCollector

        try:
            self._server, self._thread = start_http_server(self.port, self.host)
        except OSError as exc:
            raise ConfigError(f"cannot serve /metrics on port {self.port}: {exc}") from exc
        self._collector = StateCollector(lambda: connect(self.url, autocommit=True, connect_timeout=5))
        REGISTRY.register(self._collector)

    def stop(self) -> None:
        """Stop serving, close the listening socket and wait for the server's thread: the port is free
        when this returns (not whenever the garbage collector gets to the server)."""
        from prometheus_client import REGISTRY

        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
