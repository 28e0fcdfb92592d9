"""The WAL pusher's metrics (names fixed by the issue 12 contract), per remote repository:

- ``opsctl_wal_push_lag_seconds{repo}``: age of the oldest WAL file in the spool not yet verified
  there, 0 when none waits (the RPO a lost host would cost);
- ``opsctl_wal_push_failures_total{repo}``: uploads that failed;
- ``opsctl_wal_spool_segments{repo}``: files in the spool waiting for that repository;
- ``opsctl_wal_last_push_timestamp_seconds{repo}``: when a file was last verified there;
- ``opsctl_wal_push_max_lag_seconds{repo}``: the policy's ``wal_push.max_lag_seconds``, the
  threshold of the ``WalPushLagging`` alert (so the alert follows the policy).

Kept in their own registry: served by the pusher (``opsctl wal push --loop --metrics-port``, a
Prometheus target of ``opsctl up``) and written after every cycle to
``<data dir>/metrics/opsctl_wal_push.prom`` (node_exporter's textfile format).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

if TYPE_CHECKING:
    from opsctl.backup.walplan import WalPlan

LAG = "opsctl_wal_push_lag_seconds"
FAILURES = "opsctl_wal_push_failures"  # the client adds _total
SPOOL = "opsctl_wal_spool_segments"
LAST_PUSH = "opsctl_wal_last_push_timestamp_seconds"
MAX_LAG = "opsctl_wal_push_max_lag_seconds"


def textfile(data_dir: Path) -> Path:
    return data_dir / "metrics" / "opsctl_wal_push.prom"


class PushMetrics:
    def __init__(self, path: Path | None = None, max_lag_seconds: float = 300.0) -> None:
        self.registry = CollectorRegistry()
        self.path = path
        self.max_lag_seconds = max_lag_seconds
        self.lag = Gauge(LAG, "age of the oldest WAL file archived locally but not yet verified on the repository "
                              "(0 when none waits)", ["repo"], registry=self.registry)
        self.failures = Counter(FAILURES, "WAL uploads to the repository that failed", ["repo"],
                                registry=self.registry)
        self.spool = Gauge(SPOOL, "WAL files in the local spool waiting for the repository", ["repo"],
                           registry=self.registry)
        self.last_push = Gauge(LAST_PUSH, "when a WAL file was last verified on the repository", ["repo"],
                               registry=self.registry)
        self.max_lag = Gauge(MAX_LAG, "the push lag the policy allows (wal_push.max_lag_seconds)", ["repo"],
                             registry=self.registry)

    def update(self, plan: WalPlan, states: Mapping[str, Any], failed: Mapping[str, int]) -> None:
        for r in plan.repos:
            self.lag.labels(r.repo).set(r.lag_seconds)
            self.max_lag.labels(r.repo).set(self.max_lag_seconds)
            self.spool.labels(r.repo).set(r.waiting)
            self.failures.labels(r.repo).inc(failed.get(r.repo, 0))
            state = states.get(r.repo)
            if state is not None and state.last_push is not None:
                self.last_push.labels(r.repo).set(state.last_push)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.path), self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
