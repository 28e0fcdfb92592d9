"""The daemon's disk gauges (DiskNearlyFull, DiskFillingUp): which path is which volume (a table),
what statvfs says about each, and the daemon's /metrics serving them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import Settings
from opsctl.backup.policy import BackupPolicy
from opsctl.daemon.disks import DiskCollector, disk_families, host_volumes, spool_path, statvfs, volume_paths
from tests.conftest import free_port, make_settings

D = Path("/srv/opsctl")


@pytest.mark.parametrize(("repository", "spool", "embedded", "expected"), [
    (D / "backups", None, True, {"data": D / "pg", "wal": D / "pg" / "pg_wal", "repository": D / "backups"}),
    (Path("/backups"), Path("/spool"), True,
     {"data": D / "pg", "wal": D / "pg" / "pg_wal", "spool": Path("/spool"), "repository": Path("/backups")}),
    # a database on another host: its disks are its node_exporter's
    (Path("/backups"), None, False, {"repository": Path("/backups")}),
    (Path("/backups"), Path("/spool"), False, {"spool": Path("/spool"), "repository": Path("/backups")}),
])
def test_volume_paths(repository: Path, spool: Path | None, embedded: bool, expected: dict[str, Path]) -> None:
    assert volume_paths(D, repository, spool, embedded) == expected


PUSHING = {"repositories": [{"name": "disk", "type": "local", "path": "/srv/backups"},
                            {"name": "offsite", "type": "s3", "bucket": "b"}]}


def test_the_spool_is_the_local_repositorys_wal_dir_when_wal_is_pushed() -> None:
    assert spool_path(BackupPolicy(), D) is None  # no remote repository: no WAL is pushed
    assert spool_path(BackupPolicy.model_validate(PUSHING), D) == Path("/srv/backups/wal")


def test_host_volumes_look_at_what_exists(tmp_path: Path) -> None:
    policy = BackupPolicy(repository=str(tmp_path / "elsewhere" / "repo"))
    assert host_volumes(tmp_path, policy) == {"repository": tmp_path / "elsewhere" / "repo"}
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")
    (tmp_path / "backups" / "wal").mkdir(parents=True)
    assert host_volumes(tmp_path, BackupPolicy()) == {
        "data": tmp_path / "pg", "wal": tmp_path / "pg" / "pg_wal", "repository": tmp_path / "backups"}
    pushing = BackupPolicy.model_validate({"repositories": [{"name": "local", "type": "local"},
                                                            {"name": "offsite", "type": "s3", "bucket": "b"}]})
    assert host_volumes(tmp_path, pushing) == {
        "data": tmp_path / "pg", "wal": tmp_path / "pg" / "pg_wal", "spool": tmp_path / "backups" / "wal",
        "repository": tmp_path / "backups"}


def test_statvfs_measures_the_path_or_the_nearest_directory_above_it(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    expected = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
    free, size = statvfs(tmp_path) or (0, 0)
    assert size == expected[1] > 0 and 0 <= free <= size
    assert statvfs(tmp_path / "not" / "made" / "yet") is not None
    assert (statvfs(tmp_path / "not" / "made" / "yet") or (0, 0))[1] == expected[1]


def test_families_leave_out_what_could_not_be_measured() -> None:
    free, size = disk_families({"repository": (10, 100), "data": (1, 50), "spool": None})
    assert [(s.labels["volume"], s.value) for s in free.samples] == [("data", 1), ("repository", 10)]
    assert [(s.labels["volume"], s.value) for s in size.samples] == [("data", 50), ("repository", 100)]


def test_collector_measures_at_most_once_per_interval_and_survives_a_bad_policy() -> None:
    now = [0.0]
    measured: list[Path] = []

    def measure(path: Path) -> tuple[int, int]:
        measured.append(path)
        return 5, 10

    collector = DiskCollector(lambda: {"repository": Path("/r")}, min_interval=5, measure=measure,
                              monotonic=lambda: now[0])
    for _ in range(3):
        list(collector.collect())
    assert measured == [Path("/r")]
    now[0] = 5
    list(collector.collect())
    assert measured == [Path("/r"), Path("/r")]

    def broken() -> dict[str, Path]:
        raise ValueError("backup.yaml: not a mapping")

    free, size = DiskCollector(broken, min_interval=0, measure=measure).collect()
    assert free.samples == [] and size.samples == []


def daemon_metrics(settings: Settings, policies: Path, check: Callable[[Any], None]) -> list[Any]:
    """The samples a real daemon's /metrics serves, after ``check(daemon)``."""
    from opsctl.daemon.service import Daemon, DaemonConfig

    port = free_port()
    daemon = Daemon(settings, DaemonConfig(policies, metrics_port=port, metrics_host="127.0.0.1"))
    check(daemon)
    assert daemon.exporter is not None
    daemon.exporter.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        daemon.exporter.stop()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_the_daemon_serves_its_volumes(db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "pg").mkdir(parents=True)
    (data_dir / "pg" / "PG_VERSION").write_text("18\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "backup.yaml").write_text(f"kind: backup\nrepository: {tmp_path / 'repo'}\n")

    def check(daemon: Any) -> None:
        assert daemon.volumes() == {"data": data_dir.resolve() / "pg", "wal": data_dir.resolve() / "pg" / "pg_wal",
                                    "repository": tmp_path / "repo"}

    samples = daemon_metrics(make_settings(database_url=db_url, data_dir=data_dir), policies, check)
    found = {(s.name, s.labels["volume"]): s.value for s in samples if s.name.startswith("opsctl_disk_")}
    size = os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    assert {volume for _, volume in found} == {"data", "wal", "repository"}
    assert found[("opsctl_disk_size_bytes", "repository")] == size
    assert 0 <= found[("opsctl_disk_free_bytes", "repository")] <= size
