"""WAL off the host: archive_command writes to the local spool only; ``opsctl wal push`` ships the
spool to the remote repositories (a real S3 API: moto_server, behind a proxy that can take it down
or cut an upload half-way) and ``opsctl wal fetch`` brings WAL back for restores."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from opsctl.backup.archive import server_conf
from opsctl.backup.catalog import BackupRecord, Repository
from opsctl.backup.offsite import store_spec
from opsctl.backup.plan import format_lsn, segment_name
from opsctl.backup.policy import BackupPolicy
from opsctl.backup.repos import remote as remote_for
from opsctl.backup.walmetrics import PushMetrics, textfile
from opsctl.backup.walpush import Marks, fetch_wal, pusher_for, restore_command, wal_key
from tests.conftest import make_settings, project_root
from tests.s3_proxy import S3Proxy

SEG = 1 << 20  # a valid initdb --wal-segsize (1 MB): small files, the same code paths
KEY = "ab" * 32


def seg(n: int) -> str:
    return segment_name(1, n, SEG)


@pytest.fixture
def proxy(s3_server: Any) -> Iterator[S3Proxy]:
    p = S3Proxy(s3_server.port)
    p.up()
    yield p
    p.release()
    p.down()


class Setup:
    def __init__(self, root: Path, repos: list[dict[str, Any]], **extra: Any) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.policy_file = root / "backup.yaml"
        if not any(r["type"] == "local" for r in repos):  # <data dir>/backups, its WAL dir the spool
            repos = [{"name": "local", "type": "local"}, *repos]
        self.policy_file.write_text(yaml.safe_dump({"repositories": repos, **extra}))
        self.policy = BackupPolicy.model_validate({"repositories": repos, **extra})
        self.spool = self.policy.wal_dir(self.data_dir)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.now = 10_000.0
        self.metrics = PushMetrics(textfile(self.data_dir), self.policy.wal_push.max_lag_seconds)
        self.pusher = pusher_for(self.data_dir, self.policy, metrics=self.metrics, clock=lambda: self.now)

    def archive(self, name: str, mtime: float, size: int = SEG) -> bytes:
        data = os.urandom(size)
        (self.spool / name).write_bytes(data)
        os.utime(self.spool / name, (mtime, mtime))
        return data

    def metric(self, name: str, repo: str) -> float | None:
        text = textfile(self.data_dir).read_text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("repo") == repo:
                    return float(sample.value)
        return None

    def marks(self, repo: str) -> set[str]:
        spec = next(r for r in self.policy.remotes if r.name == repo)
        return Marks(self.data_dir / "wal-push", repo, store_spec(spec).url).names()


def s3_repo(name: str, bucket: str, endpoint: str, prefix: str = "", encrypted: bool = False) -> dict[str, Any]:
    repo: dict[str, Any] = {"name": name, "type": "s3", "bucket": bucket, "endpoint": endpoint, "prefix": prefix,
                            "region": "us-east-1"}
    if encrypted:
        repo["encryption"] = {"type": "aes-256-gcm", "key_env": "OPSCTL_TEST_WAL_KEY"}
    return repo


def opsctl(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsctl.cli", *args], capture_output=True, text=True,
                          cwd=project_root(), env={**os.environ, **(env or {})}, timeout=120, **kw)


# -- 1. the spool: archive_command never touches the network ---------------------------------------
PROGRAMS = {"cmp", "cp", "sync", "mv"}


def commands_run_by(shell: str) -> set[str]:
    """The first word of every simple command of a shell line (control words and assignments skipped)."""
    words = set()
    for part in re.split(r";|&&|\|\||\bthen\b|\belse\b|\bfi\b", shell):
        tokens = [t for t in shlex.split(part.strip()) if not re.match(r"^\w+=", t)]
        tokens = [t for t in tokens if t not in ("if", "[", "]")]
        if tokens and not tokens[0].startswith("-"):
            words.add(tokens[0])
    return words


def archive_line(policy: BackupPolicy, data_dir: Path) -> str:
    (line,) = [ln for ln in server_conf(policy, data_dir) if ln.startswith("archive_command")]
    return line.split(" = ", 1)[1][1:-1].replace("''", "'")


def test_with_a_local_repository_its_wal_dir_is_the_spool(tmp_path: Path) -> None:
    policy = BackupPolicy.model_validate({"repositories": [
        {"name": "local", "type": "local", "path": str(tmp_path / "repo")},
        s3_repo("offsite", "b", "http://127.0.0.1:1")]})
    assert policy.wal_dir(tmp_path) == tmp_path / "repo" / "wal" == policy.repository_path(tmp_path) / "wal"
    command = archive_line(policy, tmp_path)
    spool = (tmp_path / "repo" / "wal").resolve()
    assert f'f="{spool}/%f"' in command
    assert commands_run_by(command) <= PROGRAMS, command  # local file tools only: no network, no opsctl
    assert commands_run_by('f=x; aws s3 cp "%p" s3://b/%f && cp a b') == {"aws", "cp"}  # the check sees them
    # as PostgreSQL runs it: the segment lands in the spool, whole, under its name
    source = tmp_path / "pg_wal_segment"
    source.write_bytes(os.urandom(4096))
    line = command.replace("%p", str(source)).replace("%f", seg(3))
    assert subprocess.run(["sh", "-c", line], timeout=60).returncode == 0
    assert (spool / seg(3)).read_bytes() == source.read_bytes()
    assert sorted(p.name for p in spool.iterdir()) == [seg(3)]


# -- 3./4. the pusher, the lag, the spool ------------------------------------------------------------
def test_wal_archived_while_the_store_is_down_is_pushed_when_it_comes_back_and_the_lag_grows_meanwhile(
        tmp_path: Path, s3_bucket: str, proxy: S3Proxy) -> None:
    s = Setup(tmp_path, [{"name": "local", "type": "local", "path": str(tmp_path / "repo")},
                         s3_repo("offsite", s3_bucket, proxy.endpoint)])
    proxy.down()
    one, two = s.archive(seg(1), 9_000), s.archive(seg(2), 9_100)
    s.archive(seg(3) + ".tmp", 9_200)  # archive_command's copy in progress: never pushed

    s.now = 9_200
    sentence = s.pusher.cycle()
    assert "offsite: 2 failed (" in sentence and "2 waiting, lag 200 s" in sentence, sentence
    assert "unreachable" in sentence, sentence
    assert (s.metric("opsctl_wal_push_lag_seconds", "offsite"), s.metric("opsctl_wal_spool_segments", "offsite"),
            s.metric("opsctl_wal_push_failures_total", "offsite")) == (200, 2, 2)

    s.now = 9_200.5  # within the retry delay (1 s after one failed cycle): not tried again
    assert s.pusher.cycle() == "wal push: offsite: 2 waiting, lag 200 s"
    assert s.metric("opsctl_wal_push_failures_total", "offsite") == 2

    s.now = 9_500  # still down: the lag grows, failures are counted
    assert "2 waiting, lag 500 s" in s.pusher.cycle()
    assert s.metric("opsctl_wal_push_lag_seconds", "offsite") == 500
    assert s.metric("opsctl_wal_push_failures_total", "offsite") == 4
    assert s.metric("opsctl_wal_push_max_lag_seconds", "offsite") == 300
    assert s.marks("offsite") == set()

    proxy.up()
    s.now = 9_600
    sentence = s.pusher.cycle()
    assert sentence == "wal push: offsite: pushed 2, up to date", sentence
    assert s.metric("opsctl_wal_push_lag_seconds", "offsite") == 0
    assert s.metric("opsctl_wal_spool_segments", "offsite") == 0
    assert s.metric("opsctl_wal_last_push_timestamp_seconds", "offsite") == 9_600
    assert s.marks("offsite") == {seg(1), seg(2)}
    # what is there is what was archived: fetched back, decoded, byte for byte
    remote = remote_for(s.policy, "offsite")
    for name, data in ((seg(1), one), (seg(2), two)):
        assert fetch_wal(remote, name, tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == data
    assert remote.store.head(wal_key(seg(3) + ".tmp")) is None
    # the spool is the local repository's WAL dir: the pusher removes nothing from it
    assert sorted(p.name for p in s.spool.iterdir()) == [seg(1), seg(2), seg(3) + ".tmp"]


def test_a_repository_that_is_down_does_not_hold_up_the_others_and_catches_up(
        tmp_path: Path, s3_server: Any, s3_bucket: str, proxy: S3Proxy) -> None:
    direct = f"http://127.0.0.1:{s3_server.port}"
    s = Setup(tmp_path, [s3_repo("a", s3_bucket, direct, prefix="a/"),
                         s3_repo("b", s3_bucket, proxy.endpoint, prefix="b/")])
    s.archive(seg(1), 9_000)
    proxy.down()
    s.now = 9_100
    assert "a: pushed 1, up to date; b: 1 failed" in s.pusher.cycle()
    assert s.marks("a") == {seg(1)} and s.marks("b") == set()

    proxy.up()
    s.now = 9_200
    assert s.pusher.cycle() == "wal push: a: up to date; b: pushed 1, up to date"
    assert s.marks("a") == s.marks("b") == {seg(1)}
    (s.spool / seg(1)).unlink()  # the local prune removed it
    assert s.pusher.cycle() == "wal push: a: up to date; b: up to date"
    assert s.marks("a") == s.marks("b") == set()  # the marks of files gone from the spool go too


def test_the_local_prune_keeps_wal_that_a_remote_repository_does_not_hold_yet(
        tmp_path: Path, s3_bucket: str, proxy: S3Proxy) -> None:
    from opsctl.backup.service import plan_prune

    local = {"name": "local", "type": "local", "retention": {"type": "count", "full": 1}}  # <data dir>/backups
    s = Setup(tmp_path, [local, s3_repo("offsite", s3_bucket, proxy.endpoint)])
    for n in (1, 2, 3):
        s.archive(seg(n), 9_000 + n)
    repo = Repository(s.data_dir / "backups")
    repo.backup_dir("20260101-000000F").mkdir(parents=True)
    at = "2026-01-01T00:00:00+00:00"
    repo.save(BackupRecord(id="20260101-000000F", type="full", parent=None, start_time=at, stop_time=at,
                           database="opsctl", start_lsn=format_lsn(3 * SEG + 0x28),
                           stop_lsn=format_lsn(3 * SEG + 0x100), timeline=1, verify_result="ok"))
    settings = make_settings(data_dir=s.data_dir)
    proxy.down()
    s.pusher.cycle()
    held = {i.name: (i.action, i.reason) for i in plan_prune(settings, s.policy).wal}
    assert held[seg(1)] == held[seg(2)] == ("keep", "not yet pushed to offsite")

    proxy.up()
    s.now = 20_000
    s.pusher.cycle()
    after = {i.name: i.action for i in plan_prune(settings, s.policy).wal}
    assert after == {seg(1): "remove", seg(2): "remove", seg(3): "keep"}


def test_kill_9_in_the_middle_of_an_upload_counts_nothing_as_pushed(
        tmp_path: Path, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_TEST_WAL_KEY", KEY)
    s = Setup(tmp_path, [s3_repo("offsite", s3_bucket, proxy.endpoint, encrypted=True)])
    data = s.archive(seg(1), 9_000)
    env = {"OPSCTL_DATA_DIR": str(s.data_dir), "OPSCTL_TEST_WAL_KEY": KEY}
    proxy.stall(f"PUT /{s3_bucket}/wal/{seg(1)}".encode())
    proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "wal", "push", "--once", "--policy",
                             str(s.policy_file)], cwd=project_root(), env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proxy.stalled.wait(120), "the upload never started"
        os.kill(proc.pid, signal.SIGKILL)  # the store has part of the object's body
    finally:
        proc.communicate(timeout=60)
    proxy.release()
    assert proc.returncode == -signal.SIGKILL
    assert s.marks("offsite") == set()  # not counted as pushed
    remote = remote_for(s.policy, "offsite")
    assert remote.store.head(wal_key(seg(1))) is None  # and the store keeps no half object
    left = list((s.data_dir / "wal-push" / "tmp").iterdir())  # the encoded copy it was uploading
    assert [p.name.split(".")[:3] for p in left] == [["offsite", seg(1), str(proc.pid)]]
    status = opsctl("wal", "status", "-o", "json", "--policy", str(s.policy_file), env=env)
    assert status.returncode == 0, status.stderr
    assert [(r["repo"], r["waiting"], r["oldest"]) for r in yaml.safe_load(status.stdout)] == [("offsite", 1, seg(1))]
    again = opsctl("wal", "push", "--once", "--policy", str(s.policy_file), env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "wal push: offsite: pushed 1, up to date"
    assert fetch_wal(remote, seg(1), tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data
    assert list((s.data_dir / "wal-push" / "tmp").iterdir()) == []  # the next pusher removed the dead one's


def test_push_once_exits_1_naming_the_store_when_it_is_unreachable(
        tmp_path: Path, s3_bucket: str, proxy: S3Proxy) -> None:
    s = Setup(tmp_path, [s3_repo("offsite", s3_bucket, proxy.endpoint)])
    s.archive(seg(1), 9_000)
    proxy.down()
    proc = opsctl("wal", "push", "--once", "--policy", str(s.policy_file), env={"OPSCTL_DATA_DIR": str(s.data_dir)})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: WAL push failed (offsite: {seg(1)}: s3://{s3_bucket}: put wal/{seg(1)}: "
                           "store unreachable"), proc.stderr
    assert "Traceback" not in proc.stderr


# -- 5. fetch for restores ---------------------------------------------------------------------------
def test_restore_command_fetches_decrypted_wal_and_fails_on_a_missing_file_or_a_wrong_key(
        tmp_path: Path, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_TEST_WAL_KEY", KEY)
    s = Setup(tmp_path, [s3_repo("offsite", s3_bucket, proxy.endpoint, encrypted=True)])
    data = s.archive(seg(1), 9_000)
    assert s.pusher.cycle() == "wal push: offsite: pushed 1, up to date"
    command = restore_command("offsite", s.data_dir, s.policy_file)

    def run(name: str, dest: Path, key: str = KEY) -> subprocess.CompletedProcess[str]:
        line = command.replace("%f", name).replace("%p", str(dest))  # what PostgreSQL does
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=120, cwd=project_root(),
                              env={**os.environ, "OPSCTL_TEST_WAL_KEY": key})

    ok = run(seg(1), tmp_path / "RECOVERYXLOG")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == data
    missing = run(seg(2), tmp_path / "next")
    assert missing.returncode == 1 and not (tmp_path / "next").exists()
    assert missing.stderr.strip() == f"error: {seg(2)} is not in offsite (s3://{s3_bucket})"
    wrong = run(seg(1), tmp_path / "wrong", key="cd" * 32)
    assert wrong.returncode == 1 and not (tmp_path / "wrong").exists()
    assert "wrong key" in wrong.stderr and "Traceback" not in wrong.stderr


# -- 3. the runner: a supervised child of opsctl up ---------------------------------------------------
def test_the_pusher_child_of_opsctl_up_pushes_serves_its_metrics_and_stops_on_sigterm(
        tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    import time
    import urllib.request

    from opsctl.up.walpush import WalPushProcess
    from tests.s3_proxy import free_port

    direct = f"http://127.0.0.1:{s3_server.port}"
    s = Setup(tmp_path, [{"name": "local", "type": "local"}, s3_repo("offsite", s3_bucket, direct)])
    (tmp_path / "policies").mkdir()
    s.policy_file.rename(tmp_path / "policies" / "backup.yaml")
    s.archive(seg(1), time.time() - 30)
    port = free_port()
    child = WalPushProcess({"OPSCTL_DATA_DIR": str(s.data_dir), "OPSCTL_POLICY_DIR": str(tmp_path / "policies")},
                           port, log_dir=tmp_path / "logs")
    child.start()
    try:
        deadline = time.monotonic() + 120  # a bound on a hung child, not a margin the test depends on
        while s.marks("offsite") != {seg(1)}:
            assert not child.exited(), (tmp_path / "logs" / "wal-push.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "logs" / "wal-push.log").read_text()
            time.sleep(0.05)
        while True:  # the metrics of the cycle that pushed it (written after the mark)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
                body = response.read().decode()
            if 'opsctl_wal_push_lag_seconds{repo="offsite"} 0.0' in body or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert 'opsctl_wal_push_lag_seconds{repo="offsite"} 0.0' in body
        assert 'opsctl_wal_spool_segments{repo="offsite"} 0.0' in body
        assert 'opsctl_wal_push_max_lag_seconds{repo="offsite"} 300.0' in body
    finally:
        child.stop()
    assert child.proc is not None and child.proc.returncode == 0
    assert "wal push: offsite: pushed 1, up to date" in (tmp_path / "logs" / "wal-push.log").read_text()


@pytest.mark.parametrize(("policy", "runs"), [
    ({"repositories": [{"name": "local", "type": "local"}, {"name": "offsite", "type": "s3", "bucket": "b"}]}, True),
    ({"repositories": [{"name": "local", "type": "local"}, {"name": "dr", "type": "gcs", "bucket": "b"}]}, True),
    ({"mode": "logical", "repositories": [{"name": "local", "type": "local"},
                                         {"name": "offsite", "type": "s3", "bucket": "b"}]}, False),
    ({"repositories": [{"name": "local", "type": "local"}]}, False),
    (None, False),  # no backup.yaml: one local repository
])
def test_opsctl_up_runs_the_pusher_only_when_wal_has_somewhere_to_go(
        policy: dict[str, Any] | None, runs: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from opsctl.up.system import pushes_wal

    if policy is not None:
        (tmp_path / "backup.yaml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    assert pushes_wal() is runs


# -- 5. restores: a local copy of the remote archive ------------------------------------------------
def test_wal_archived_by_postgresql_goes_to_the_remote_repository_and_comes_back_whole(
        s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from opsctl.backup.archive import switch_and_wait
    from opsctl.backup.walpush import fetch_from
    from tests.backup_helpers import add_documents, archived_cluster, company

    monkeypatch.setenv("OPSCTL_TEST_WAL_KEY", KEY)
    offsite = s3_repo("offsite", s3_bucket, f"http://127.0.0.1:{s3_server.port}", prefix="pg/", encrypted=True)
    with archived_cluster(repositories=[{"name": "local", "type": "local"}, offsite]) as cluster:
        spool = cluster.policy.wal_dir(cluster.root)
        assert spool == cluster.root / "repo" / "wal"
        with cluster.connect() as conn:
            add_documents(conn, company(conn, "acme"), "doc", 20)
            first = switch_and_wait(conn, spool)
            add_documents(conn, company(conn, "beta"), "doc", 20)
            last = switch_and_wait(conn, spool)
        archived = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in spool.iterdir()
                    if p.is_file() and not p.name.endswith(".tmp")}
        assert {first, last} <= set(archived)
        pusher = pusher_for(cluster.root, cluster.policy)
        sentence = pusher.cycle()
        assert sentence.startswith(f"wal push: offsite: pushed {len(archived)}, up to date"), sentence
        assert pusher.marks["offsite"].names() >= set(archived)  # verified remotely (the local prune may let go)

        back = cluster.root / "restore-wal"
        names = fetch_from(remote_for(cluster.policy, "offsite"), back, first=first)
        assert names[0] == first and names[-1] == last
        assert {n: hashlib.sha256((back / n).read_bytes()).hexdigest() for n in names} == {
            n: h for n, h in archived.items() if n >= first}


def test_opsctl_up_supervises_the_pusher_and_prometheus_scrapes_its_lag(
        tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    import json

    import psycopg

    from core.embedded import prometheus_binary
    from tests.conftest import free_port, outside_pytest_tmp
    from tests.test_up import prom_query, ready, start_up
    from tests.waiting import wait_for

    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    data_dir = outside_pytest_tmp("opsctl-test-walpush-") / "state"
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "backup.yaml").write_text(yaml.safe_dump({"repositories": [
        {"name": "local", "type": "local"}, s3_repo("offsite", s3_bucket, f"http://127.0.0.1:{s3_server.port}")]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()))
    port, prom_port = free_port(), free_port()
    log = tmp_path / "up.log"
    proc = start_up(env, port, prom_port, log)

    def child() -> dict[str, Any] | None:
        record = json.loads((data_dir / "up.json").read_text()) if (data_dir / "up.json").exists() else {}
        return next((c for c in record.get("children", []) if c["name"] == "wal-push"), None)

    try:
        wait_for(lambda: ready(f"http://127.0.0.1:{port}"), 90, "the API")
        first = wait_for(lambda: (c := child()) and c["state"] == "running" and c["processes"] and c, 30,
                         "the pusher in up.json")
        url = json.loads((data_dir / "state.json").read_text())["database_url"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE wal_push_probe AS SELECT generate_series(1, 1000) AS n")
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
            conn.execute("SELECT pg_switch_wal()")
        prom = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: prom_query(prom, 'opsctl_wal_last_push_timestamp_seconds{job="opsctl-wal-push",'
                                          'repo="offsite"} > 0'), 90, "Prometheus to see a push")
        remote = remote_for(BackupPolicy.model_validate(yaml.safe_load((tmp_path / "policies" / "backup.yaml")
                                                                       .read_text())), "offsite")
        wait_for(lambda: remote.store.head(wal_key(segment)), 90, "the switched segment on the remote repository")

        os.kill(first["processes"][0]["pid"], signal.SIGKILL)
        wait_for(lambda: (c := child()) and c["restarts"] == 1 and c["state"] == "running", 60,
                 "the supervisor to restart the pusher")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)
    assert code == 0, log.read_text()[-3000:]
    assert "stopping the WAL pusher" in log.read_text()
    leftovers = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"
