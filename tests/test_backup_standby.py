"""Backups streamed from a streaming standby (``--from-standby``): full and incremental, and the drill restores them."""

from __future__ import annotations

import time

import psycopg
import pytest

from core.errors import ConfigError
from core.standby import EmbeddedStandby
from opsctl.backup.drill import failure_reason, run_drill
from opsctl.backup.service import create_backup, repository
from tests.backup_helpers import add_documents, archived_cluster, company


def caught_up(primary_url: str, standby: EmbeddedStandby) -> None:
    with psycopg.connect(primary_url, autocommit=True) as primary, \
            psycopg.connect(standby.admin_url, autocommit=True) as replica:
        target = primary.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 120
        while not replica.execute("SELECT pg_last_wal_replay_lsn() >= %s", (target,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def test_full_and_incremental_backups_from_a_standby_restore_in_the_drill() -> None:
    with archived_cluster() as c, c.connect() as conn:
        standby = EmbeddedStandby.of(c.pg, 1)
        standby.start()
        try:
            settings = c.settings.model_copy(update={"database_replica_urls": [standby.url]})
            acme = company(conn, "acme")
            add_documents(conn, acme, "a", 3)
            caught_up(c.url, standby)
            full = create_backup(settings, c.policy, from_standby=True)
            repo = repository(settings, c.policy)
            label = (repo.backup_dir(full.id) / "data" / "backup_label").read_text()
            assert "BACKUP FROM: standby" in label, label
            add_documents(conn, acme, "b", 3, seed=1)
            caught_up(c.url, standby)
            incr = create_backup(settings, c.policy, incremental=True, from_standby=True)
            assert incr.type == "incr" and incr.parent == full.id
            assert "BACKUP FROM: standby" in (repo.backup_dir(incr.id) / "data" / "backup_label").read_text()
            report = run_drill(settings, c.policy)
            assert report["passed"] and report["chain"] == [full.id, incr.id], failure_reason(report)
        finally:
            standby.stop(mode="immediate")


def test_from_standby_without_a_replica_is_a_config_error() -> None:
    with archived_cluster() as c:
        with pytest.raises(ConfigError, match="needs a replica"):
            create_backup(c.settings, c.policy, from_standby=True)
        assert repository(c.settings, c.policy).list() == []
