"""Searches through a real streaming standby of the test server (core.replicas, core.standby).

The standby is a real ``pg_basebackup -R`` copy streaming from the session's PostgreSQL; the
API is the real app. Each test checks the replicas explicitly (``check()``) instead of running the
monitor thread, and waits for the standby on what it reports (replayed LSN, paused state),
never on a clock."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from core.embedded import EmbeddedPostgres
from core.replicas.reader import ReplicaSet
from core.standby import EmbeddedStandby
from tests.conftest import RunningApi, drain
from tests.test_ingest_search import ingest, search

WAIT = 120  # seconds before a wait for the standby gives up (a failure, not a measurement)


@pytest.fixture(scope="module")
def standby(pg_server: EmbeddedPostgres) -> Iterator[EmbeddedStandby]:
    server = EmbeddedStandby.of(pg_server, 1)
    server.start()
    yield server
    server.stop(mode="immediate")
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                     (server.slot,))


def replica_url(db_url: str, pg_server: EmbeddedPostgres, standby: EmbeddedStandby) -> str:
    return db_url.replace(f"port={pg_server.port}", f"port={standby.port}")


@pytest.fixture
def replicated(api: RunningApi, db_url: str, pg_server: EmbeddedPostgres,
               standby: EmbeddedStandby) -> Iterator[ReplicaSet]:
    """The API with the standby as its one replica (checked by the test, not by a thread)."""
    if not standby.running():
        standby.start()
    settings = api.settings.model_copy(update={"database_replica_urls": [replica_url(db_url, pg_server, standby)],
                                               "replica_max_lag_seconds": 3600.0})
    replicas = ReplicaSet(settings, api.pool)
    api.services.replicas = replicas
    wait_caught_up(replicas)
    yield replicas
    api.services.replicas = None
    replicas.close()


def wait_caught_up(replicas: ReplicaSet) -> None:
    deadline = time.monotonic() + WAIT
    while (m := replicas.check()[0]).lag_seconds != 0.0 or not m.up:
        assert time.monotonic() < deadline, f"the standby did not catch up: {m}"
        time.sleep(0.05)


def reads(target: str, reason: str) -> float:
    return REGISTRY.get_sample_value("core_search_reads_total", {"target": target, "reason": reason}) or 0.0


def sample(name: str, replica: str = "replica-1") -> float | None:
    return REGISTRY.get_sample_value(name, {"replica": replica})


DOC = {"external_id": "r-1", "text": "Replicas answer searches about lighthouse keepers."}
LATER = {"external_id": "r-2", "text": "Acknowledged writes about submarine cables are never missed."}


def ingested(api: RunningApi, key: str, db_url: str, doc: dict[str, Any]) -> None:
    ingest(api, key, [doc])
    assert drain(api.settings, db_url) == 1


def test_a_search_reads_from_a_caught_up_replica(api: RunningApi, tenant: Any, db_url: str,
                                                 replicated: ReplicaSet) -> None:
    ingested(api, tenant.api_key, db_url, DOC)
    wait_caught_up(replicated)
    assert sample("core_db_replica_lag_seconds") == 0.0
    assert sample("core_db_replica_up") == 1.0
    before = reads("replica", "fresh")
    found = search(api, tenant.api_key, "lighthouse keepers", mode="keyword")
    assert [r["external_id"] for r in found["results"]] == ["r-1"]
    assert reads("replica", "fresh") == before + 1


def test_an_acknowledged_write_is_never_missed_while_replay_is_paused(
        api: RunningApi, tenant: Any, db_url: str, standby: EmbeddedStandby, replicated: ReplicaSet) -> None:
    ingested(api, tenant.api_key, db_url, DOC)
    wait_caught_up(replicated)
    standby.pause_replay()
    try:
        with psycopg.connect(standby.admin_url, autocommit=True) as conn:
            deadline = time.monotonic() + WAIT
            while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":  # type: ignore[index]
                assert time.monotonic() < deadline
                time.sleep(0.02)
        ingested(api, tenant.api_key, db_url, LATER)  # acknowledged, processed: data_version bumped
        assert replicated.route().replica == "replica-1"  # the lag bound alone would still send it there
        before = reads("primary", "behind")
        found = search(api, tenant.api_key, "submarine cables", mode="keyword")
        assert [r["external_id"] for r in found["results"]] == ["r-2"]
        assert reads("primary", "behind") == before + 1
        lag = replicated.check()[0].lag_seconds
        assert lag > 0.0  # paused behind the primary: measured as behind, not as an idle primary's 0
    finally:
        standby.resume_replay()
    wait_caught_up(replicated)
    before = reads("replica", "fresh")
    found = search(api, tenant.api_key, "submarine cables and lighthouse keepers", mode="keyword")
    assert {r["external_id"] for r in found["results"]} == {"r-1", "r-2"}
    assert reads("replica", "fresh") == before + 1


def test_a_stopped_replica_sends_searches_to_the_primary(api: RunningApi, tenant: Any, db_url: str,
                                                        standby: EmbeddedStandby, replicated: ReplicaSet) -> None:
    ingested(api, tenant.api_key, db_url, DOC)
    wait_caught_up(replicated)
    search(api, tenant.api_key, "lighthouse", mode="keyword")  # a pooled connection to the replica exists
    standby.stop(mode="fast")
    try:
        # stopped between two checks: the search fails over on its own, and marks the replica down
        before = reads("primary", "down")
        found = search(api, tenant.api_key, "lighthouse keepers", mode="keyword")
        assert [r["external_id"] for r in found["results"]] == ["r-1"]
        assert reads("primary", "down") == before + 1
        assert sample("core_db_replica_up") == 0.0
        # and the next check says so too
        assert not replicated.check()[0].up
        assert math.isnan(sample("core_db_replica_lag_seconds") or 0.0)
        found = search(api, tenant.api_key, "keepers", mode="keyword")
        assert [r["external_id"] for r in found["results"]] == ["r-1"]
        assert reads("primary", "down") == before + 2
    finally:
        standby.start()
    wait_caught_up(replicated)
    assert sample("core_db_replica_up") == 1.0


def test_stale_slots_are_dropped_and_a_standby_without_its_slot_is_copied_afresh(
        pg_server: EmbeddedPostgres, standby: EmbeddedStandby) -> None:
    from core.standby import drop_stale_slots

    if not standby.running():
        standby.start()
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot('opsctl_replica_3')")
        conn.execute("SELECT pg_create_physical_replication_slot('someone_elses')")
        try:
            assert drop_stale_slots(pg_server, keep=1) == ["opsctl_replica_3"]  # replica-1's own slot is kept
            slots = {r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")}
            assert {"opsctl_replica_1", "someone_elses"} <= slots and "opsctl_replica_3" not in slots
        finally:
            conn.execute("SELECT pg_drop_replication_slot('someone_elses')")
        # the slot of a stopped standby is lost (a restored primary has none): the next start copies it again
        standby.stop(mode="fast")
        marker = standby.data_dir / "opsctl-test-marker"
        marker.write_text("from the old copy")
        conn.execute("SELECT pg_drop_replication_slot('opsctl_replica_1')")
    standby.start()
    assert not marker.exists() and (standby.data_dir / "standby.signal").exists()
    with psycopg.connect(standby.admin_url, autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
