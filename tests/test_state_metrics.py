"""The daemon's state gauges: read from the database at scrape time, the same on every replica."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core.db import connect
from opsctl.audit import record
from opsctl.daemon.state_metrics import NAMES, SCRAPE_ERRORS, StateCollector

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def scrape(collector: StateCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_gauges_follow_the_audit_log_and_the_catalog(db_url: str, conn: psycopg.Connection[Any]) -> None:
    collector = StateCollector(lambda: connect(db_url, autocommit=True), min_interval=0, clock=lambda: NOW)
    empty = scrape(collector)
    assert not any(name == "opsctl_backup_last_success_timestamp_seconds" for name, _ in empty)  # absent, not 0
    assert not any(name == "opsctl_scale_desired_replicas" for name, _ in empty)

    record(conn, "scale.decide", target="core-worker", from_state=2, to_state=5, reason="backlog",
           details={"max_replicas": 5})
    record(conn, "scale.decide", target="core-worker", from_state=5, to_state=4, reason="drained",
           details={"max_replicas": 5})
    record(conn, "backup.create", target="b1", details={"id": "b1"})
    record(conn, "backup.copy", target="b0@offsite", reason="verified", details={"repo": "offsite"})
    record(conn, "backup.copy", target="b1@offsite", reason="failed: store unreachable", details={"repo": "offsite"})
    record(conn, "backup.copy", target="b1@dr", reason="failed: store unreachable", details={"repo": "dr"})
    record(conn, "index.recall", details={"recall": {"chunks_p2026_11_embedding_idx": 0.93}})
    conn.execute("INSERT INTO companies (name, webhook_secret) VALUES ('acme', 's')")
    conn.execute("INSERT INTO documents_default (company_id, external_id, body, content_hash, created_at)"
                 " VALUES (1, 'old', 'x', '\\x00', '1999-01-01')")
    backup_at = conn.execute("SELECT max(at) FROM ops_events WHERE action = 'backup.create'").fetchone()[0]  # type: ignore[index]
    copied_at = conn.execute("SELECT max(at) FROM ops_events WHERE action = 'backup.copy'"
                             " AND reason = 'verified'").fetchone()[0]  # type: ignore[index]

    got = scrape(collector)
    assert got[("opsctl_scale_current_replicas", (("service", "core-worker"),))] == 5
    assert got[("opsctl_scale_desired_replicas", (("service", "core-worker"),))] == 4
    assert got[("opsctl_scale_max_replicas", (("service", "core-worker"),))] == 5
    assert got[("opsctl_backup_last_success_timestamp_seconds", (("repo", "local"),))] == backup_at.timestamp()
    # per remote repository: the newest VERIFIED copy (a failed one is no backup there; never one: absent)
    assert got[("opsctl_backup_last_success_timestamp_seconds", (("repo", "offsite"),))] == copied_at.timestamp()
    assert ("opsctl_backup_last_success_timestamp_seconds", (("repo", "dr"),)) not in got
    assert got[("opsctl_vector_index_recall", (("index", "chunks_p2026_11_embedding_idx"),))] == 0.93
    assert got[("opsctl_partition_default_rows", (("table", "documents"),))] == 1
    assert got[("opsctl_partition_default_rows", (("table", "chunks"),))] == 0
    # the template premade the current month and 4 ahead from the real clock: NOW is in the same month
    # or earlier, so at least 4 partitions start after NOW's month
    assert got[("opsctl_partitions_premade_ahead", (("table", "chunks"),))] >= 4


def test_a_failed_read_is_counted_and_serves_nothing(tmp_path: Any) -> None:
    before = SCRAPE_ERRORS._value.get()
    missing = f"postgresql://postgres@/none?host={tmp_path}&port=1"
    collector = StateCollector(lambda: connect(missing, autocommit=True, connect_timeout=2), min_interval=0)
    assert scrape(collector) == {}
    assert SCRAPE_ERRORS._value.get() == before + 1


def test_registering_reads_nothing_and_names_every_gauge(db_url: str, conn: psycopg.Connection[Any]) -> None:
    calls: list[int] = []

    def connect_counted() -> Any:
        calls.append(1)
        return connect(db_url, autocommit=True)

    collector = StateCollector(connect_counted, min_interval=0, clock=lambda: NOW)
    CollectorRegistry().register(collector)
    assert calls == []  # no database read (and no import that registers metrics) under the registry's lock
    record(conn, "backup.create", target="b1")
    record(conn, "scale.decide", target="w", from_state=1, to_state=1, details={"max_replicas": 3})
    record(conn, "index.recall", details={"recall": {"i": 1.0}})
    emitted = {name for name, _ in scrape(collector)}
    assert emitted == set(NAMES)


def test_the_metrics_server_lets_go_of_its_port_when_stopped(db_url: str) -> None:
    """stop() closes the listening socket and ends the server's thread itself, rather than leaving the
    socket to the garbage collector: with any other reference to the server alive (a traceback, a
    debugger) the port stays taken otherwise. The same port serves again at once."""
    import threading

    import httpx

    from opsctl.daemon.exporter import Exporter
    from tests.conftest import free_port

    port = free_port()
    threads = threading.active_count()
    held = []
    for _ in range(2):  # a daemon restarted in the same process (tests, `opsctl up`) reuses its port
        exporter = Exporter(db_url, port, "127.0.0.1")
        exporter.start()
        held.append(exporter._server)  # what keeps a server object alive beyond stop()
        assert "# TYPE opsctl_scale_max_replicas gauge" in httpx.get(f"http://127.0.0.1:{port}/metrics",
                                                                     timeout=10).text
        exporter.stop()
        assert threading.active_count() == threads, "the server thread ended"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
