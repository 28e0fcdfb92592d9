"""Backups off the host, against real PostgreSQL clusters and a real S3-API server (moto_server):
copied after each backup (manifest last, checked remotely), listed per repository, verified where
they are, restored from the object store alone, and every failure named — an unreachable store, a
full one, a half-written copy, the wrong key — with nothing local deleted before its copy is verified."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl.backup.offsite import manifest_key, open_remote
from opsctl.backup.policy import BackupPolicy
from tests.backup_helpers import Cluster, add_documents, archived_cluster, company
from tests.conftest import free_port
from tests.s3_helpers import FullStoreProxy
from tests.test_backup import cli

KEY_A = "aa" * 32
KEY_B = "bb" * 32


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI runs in a subprocess: the key reaches it through the environment, as in production
    monkeypatch.setenv("TEST_BACKUP_KEY", KEY_A)


def remote_config(endpoint: str, bucket: str, *, encrypt: bool = True, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"name": "offsite", "type": "s3", "bucket": bucket, "prefix": "prod/",
                              "endpoint": endpoint, "retries": 0, "timeout_seconds": 30,
                              "compression": {"type": "zstd", "level": 3}, **extra}
    if encrypt:
        config["encryption"] = {"type": "aes-256-gcm", "key_env": "TEST_BACKUP_KEY"}
    return config


def offsite_policy(c: Cluster, remote: dict[str, Any], **extra: Any) -> Path:
    data = {"fsync": False, "repositories": [{"name": "local", "type": "local", "path": str(c.root / "repo")},
                                             remote], **extra}
    path = c.root / "backup.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def policy_of(path: Path) -> BackupPolicy:
    return BackupPolicy.model_validate(yaml.safe_load(path.read_text()))


def test_a_backup_is_copied_listed_per_repository_and_verified_where_it_is(s3_server: Any, s3_bucket: str,
                                                                           keys: None) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 3)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket))
        created = json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)
        assert created["repos"] == ["local", "offsite"]
        copy = created["copies"]["offsite"]
        assert copy["state"] == "verified" and copy["compression"] == "zstd"
        assert copy["key_id"] == open_remote(policy_of(pol).remotes[0]).key.id  # type: ignore[union-attr]
        assert 0 < copy["stored_bytes"] < copy["plain_bytes"]  # compressed

        from prometheus_client.parser import text_string_to_metric_families

        text = (c.root / "metrics" / "opsctl_backup_repository.prom").read_text()
        gauges = {s.labels["repo"]: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert gauges == {"local": created["size_bytes"], "offsite": copy["stored_bytes"]}, gauges

        table = cli(c, "backup", "list", policy=pol).stdout
        assert "REPO" in table and "local,offsite" in table
        remote_list = json.loads(cli(c, "backup", "list", "--repo", "offsite", "-o", "json", policy=pol).stdout)
        assert [(b["id"], b["repo"]) for b in remote_list] == [(created["id"], "offsite")]

        remote = open_remote(policy_of(pol).remotes[0])
        assert remote.store.head(manifest_key(created["id"])) is not None
        pg_control = b"".join(remote.store.get(f"backups/{created['id']}/files/data/global/pg_control"))
        local_control = (c.root / "repo" / "backups" / created["id"] / "data" / "global" / "pg_control").read_bytes()
        assert pg_control[:4] == b"OPSC" and local_control[:64] not in pg_control  # encrypted there

        verified = json.loads(cli(c, "backup", "verify", "--repo", "offsite", "-o", "json", policy=pol).stdout)
        assert verified[0]["ok"] and verified[0]["files"] > 100 and verified[0]["wal_segments"] >= 1

        # the remote copy is what `verify --repo` reads: spoil it there, the local one stays good
        victim = max((o for o in remote.store.list(f"backups/{created['id']}/files/data/base/")),
                     key=lambda o: o.size)
        remote.store.put(victim.key, b"".join(remote.codec.encode([b"not the same bytes"])))
        failed = cli(c, "backup", "verify", "--repo", "offsite", policy=pol, check=False)
        assert failed.returncode == 1 and victim.key in failed.stderr, failed.stderr
        assert cli(c, "backup", "verify", policy=pol).returncode == 0
        listed = json.loads(cli(c, "backup", "list", "-o", "json", policy=pol).stdout)
        assert listed[0]["copies"]["offsite"]["verify_result"].startswith("failed:")


@pytest.mark.parametrize("encrypt", [True, False], ids=["zstd+aes", "zstd"])
def test_restore_test_from_the_object_store_alone(s3_server: Any, s3_bucket: str, keys: None, encrypt: bool) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 5)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket, encrypt=encrypt))
        created = json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)
        shutil.rmtree(c.root / "repo" / "backups")  # the host's backups are lost: only the store has them

        run = cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol, check=False)
        report = json.loads(run.stdout)
        assert run.returncode == 0 and report["passed"], (report.get("error"), report["checks"])
        assert report["backup"] == created["id"] and report["repo"] == "offsite"
        rates = report["throughput"]
        for step in ("download", "decompress", "write", "combine", "start_to_consistent"):
            assert rates[f"{step}_bytes_per_second"] > 0, rates
        assert ("decrypt_bytes_per_second" in rates) == encrypt
        assert rates["stored_bytes"] < rates["plain_bytes"]
        assert not list(Path(c.root).glob("opsctl-fetch-*"))  # the scratch download is gone


def test_restore_test_from_the_store_replays_the_pushed_wal_to_the_latest_point_or_a_target_time(
        s3_server: Any, s3_bucket: str, keys: None) -> None:
    from opsctl.backup.archive import switch_and_wait

    with archived_cluster() as c, c.connect() as conn:
        acme = company(conn, "acme")
        add_documents(conn, acme, "early", 5)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket))
        created = json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)
        between = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        add_documents(conn, acme, "late", 3)  # written after the backup: only the WAL holds it
        late = conn.execute("SELECT (pg_last_committed_xact()).timestamp").fetchone()[0]  # type: ignore[index]
        assert late > between
        switch_and_wait(conn, c.root / "repo" / "wal")
        pushed = cli(c, "wal", "push", "--once", policy=pol)
        assert "offsite: pushed" in pushed.stdout, pushed.stdout
        shutil.rmtree(c.root / "repo")  # the whole local repository is lost: backups and WAL

        run = cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol, check=False)
        report = json.loads(run.stdout)
        assert run.returncode == 0 and report["passed"], (report.get("error"), report["checks"])
        assert report["backup"] == created["id"] and report["repo"] == "offsite"
        assert datetime.fromisoformat(report["last_replayed_commit"]) >= late  # the later write is back
        assert report["throughput"]["wal_files"] >= 1 and report["throughput"]["fetch_wal_bytes_per_second"] > 0

        run = cli(c, "restore-test", "--repo", "offsite", "--target-time", between.isoformat(), "-o", "json",
                  policy=pol, check=False)
        report = json.loads(run.stdout)
        assert run.returncode == 0 and report["passed"], (run.stderr, report.get("error"), report.get("checks"))
        assert report["target_time"] == between.isoformat()
        assert datetime.fromisoformat(report["last_replayed_commit"]) <= between  # the later write is not
        # (and point_in_time passed: the restored rows are exactly the source's committed by the target)
        assert not list(Path(c.root).glob("opsctl-fetch-*"))


def test_an_unreachable_store_fails_the_copy_and_local_prune_keeps_the_backup(s3_server: Any, keys: None) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 2)
        dead = remote_config(f"http://127.0.0.1:{free_port()}", "nowhere")
        pol = offsite_policy(c, dead, retention={"type": "count", "full": 1})
        first = cli(c, "backup", "create", policy=pol, check=False)
        assert first.returncode == 1
        assert "its copy to offsite failed" in first.stderr and "store unreachable" in first.stderr, first.stderr
        second = cli(c, "backup", "create", policy=pol, check=False)
        assert second.returncode == 1
        listed = json.loads(cli(c, "backup", "list", "-o", "json", policy=pol).stdout)
        assert len(listed) == 2 and all(b["copies"]["offsite"]["state"] == "failed" for b in listed)
        assert all(b["repos"] == ["local"] for b in listed)

        # retention says keep 1, but neither has a verified copy offsite: prune removes nothing
        plan = json.loads(cli(c, "backup", "prune", "--apply", "-o", "json", policy=pol).stdout)
        first_id = listed[0]["id"]
        row = next(r for r in plan if r["name"] == first_id)
        assert row["action"] == "keep" and "no verified copy on offsite" in row["reason"]
        assert (c.root / "repo" / "backups" / first_id / "backup.json").is_file()

        # the drill from that repository fails naming the cause
        drill = cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol, check=False)
        assert drill.returncode == 1 and "store unreachable" in json.loads(drill.stdout)["error"]


def test_a_full_store_fails_the_copy_with_the_store_s_answer_and_push_retries(s3_server: Any, s3_bucket: str,
                                                                             keys: None) -> None:
    proxy = FullStoreProxy(s3_server.endpoint, budget=1 << 20)
    try:
        with archived_cluster() as c, c.connect() as conn:
            add_documents(conn, company(conn, "acme"), "a", 2)
            pol = offsite_policy(c, remote_config(proxy.endpoint, s3_bucket, parallel=1),
                                 retention={"type": "count", "full": 1})
            run = cli(c, "backup", "create", policy=pol, check=False)
            assert run.returncode == 1 and "EntityTooLarge" in run.stderr, run.stderr
            backup_id = json.loads(cli(c, "backup", "list", "-o", "json", policy=pol).stdout)[0]["id"]
            # the upload stopped part way: objects but no manifest, listed as incomplete, never restorable
            remote = open_remote(policy_of(pol).remotes[0])
            assert remote.store.list(f"backups/{backup_id}/") and remote.store.head(manifest_key(backup_id)) is None
            incomplete = cli(c, "backup", "list", "--repo", "offsite", policy=pol)
            assert "no manifest" in incomplete.stderr

            # space again (the store behind the proxy): `backup push` copies what has no verified copy
            direct = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket),
                                    retention={"type": "count", "full": 1})
            pushed = json.loads(cli(c, "backup", "push", "-o", "json", policy=direct).stdout)
            assert [(r["id"], r["ok"]) for r in pushed] == [(backup_id, True)]
            assert json.loads(cli(c, "backup", "list", "-o", "json", policy=direct).stdout)[0]["repos"] == [
                "local", "offsite"]
    finally:
        proxy.close()


def test_a_half_written_copy_is_named_by_verify_and_the_drill(s3_server: Any, s3_bucket: str, keys: None) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 2)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket))
        backup_id = json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)["id"]
        remote = open_remote(policy_of(pol).remotes[0])
        # an object cut short (a size mismatch with the manifest)
        victim = next(o for o in remote.store.list(f"backups/{backup_id}/files/data/base/") if o.size > 100)
        whole = b"".join(remote.store.get(victim.key))
        remote.store.put(victim.key, whole[: len(whole) // 2])
        cut = cli(c, "backup", "verify", "--repo", "offsite", policy=pol, check=False)
        assert cut.returncode == 1 and victim.key in cut.stderr and "the manifest says" in cut.stderr, cut.stderr
        drill = json.loads(cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol,
                               check=False).stdout)
        assert not drill["passed"] and victim.key in drill["error"] and "truncated" in drill["error"], drill["error"]

        # the manifest missing (the upload died before its last object)
        remote.store.delete(manifest_key(backup_id))
        gone = cli(c, "backup", "verify", "--repo", "offsite", policy=pol, check=False)
        assert gone.returncode == 1 and "no manifest" in gone.stderr and "half-written" in gone.stderr, gone.stderr
        drill = json.loads(cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol,
                               check=False).stdout)
        assert not drill["passed"] and "no backup in repository offsite" in drill["error"], drill["error"]


def test_the_wrong_key_is_named_by_verify_and_the_drill(s3_server: Any, s3_bucket: str, keys: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 2)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket))
        cli(c, "backup", "create", policy=pol)
        monkeypatch.setenv("TEST_BACKUP_KEY", KEY_B)
        wrong = cli(c, "backup", "verify", "--repo", "offsite", policy=pol, check=False)
        assert wrong.returncode == 1 and "wrong key" in wrong.stderr, wrong.stderr
        drill = json.loads(cli(c, "restore-test", "--repo", "offsite", "-o", "json", policy=pol,
                               check=False).stdout)
        assert not drill["passed"] and "wrong key" in drill["error"], drill["error"]
        monkeypatch.delenv("TEST_BACKUP_KEY")
        unset = cli(c, "backup", "verify", "--repo", "offsite", policy=pol, check=False)
        assert unset.returncode == 2 and "TEST_BACKUP_KEY" in unset.stderr, unset.stderr


def test_remote_prune_follows_that_repository_s_retention(s3_server: Any, s3_bucket: str, keys: None) -> None:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 2)
        pol = offsite_policy(c, remote_config(s3_server.endpoint, s3_bucket, retention={"type": "count", "full": 1}),
                             retention={"type": "count", "full": 3})
        ids = [json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)["id"] for _ in range(2)]
        dry = json.loads(cli(c, "backup", "prune", "--repo", "offsite", "-o", "json", policy=pol).stdout)
        assert {r["name"]: r["action"] for r in dry if r["kind"] == "full"} == {ids[0]: "remove", ids[1]: "keep"}
        remote = open_remote(policy_of(pol).remotes[0])
        assert remote.store.head(manifest_key(ids[0])) is not None  # a dry run removes nothing
        cli(c, "backup", "prune", "--repo", "offsite", "--apply", policy=pol)
        assert not remote.store.list(f"backups/{ids[0]}/") and remote.store.head(manifest_key(ids[1]))
        listed = {b["id"]: b for b in json.loads(cli(c, "backup", "list", "-o", "json", policy=pol).stdout)}
        assert listed[ids[0]]["copies"]["offsite"]["state"] == "pruned" and listed[ids[0]]["repos"] == ["local"]
        local_plan = json.loads(cli(c, "backup", "prune", "-o", "json", policy=pol).stdout)
        assert all(r["action"] == "keep" for r in local_plan if r["kind"] == "full")  # retention 3 locally

        # the daemon's prune job: the local repository, then each remote one by its own retention
        from opsctl.backup.jobs import job_backup_prune

        third = json.loads(cli(c, "backup", "create", "-o", "json", policy=pol).stdout)["id"]
        said = job_backup_prune(c.settings, pol.parent)
        assert "offsite: prune: remove 1 backup(s)" in said, said
        assert remote.store.head(manifest_key(ids[1])) is None and remote.store.head(manifest_key(third))
