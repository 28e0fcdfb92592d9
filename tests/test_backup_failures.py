"""Every way a drill or a repository can be broken ends in a message that names the cause.

One cluster and one full backup for the module; each case damages a copy of what it needs, runs the
CLI in this process (table and JSON), and puts the repository back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.humanize import format_bytes
from opsctl.backup.catalog import BackupRecord, Repository
from opsctl.backup.plan import parse_lsn, segments_between
from opsctl.backup.service import create_backup, repository
from opsctl.backup.verify import segment_size
from tests.backup_helpers import Cluster, add_documents, archived_cluster, company


@dataclass
class Taken:
    cluster: Cluster
    repo: Repository
    record: BackupRecord
    policy: Path

    @property
    def data(self) -> Path:
        return self.repo.backup_dir(self.record.id) / "data"

    def biggest_data_file(self) -> Path:
        return max((p for p in (self.data / "base").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)

    def first_wal_segment(self) -> Path:
        assert self.record.start_lsn and self.record.stop_lsn and self.record.timeline
        names = segments_between(self.record.timeline, parse_lsn(self.record.start_lsn),
                                 parse_lsn(self.record.stop_lsn), segment_size(self.repo))
        return self.repo.wal_dir / names[0]


def write_policy(root: Path, repo: Path, name: str = "backup.yaml") -> Path:
    import yaml

    path = root / name
    path.write_text(yaml.safe_dump({"repository": str(repo), "fsync": False}))
    return path


@pytest.fixture(scope="module")
def taken() -> Iterator[Taken]:
    with archived_cluster() as c, c.connect() as conn:
        add_documents(conn, company(conn, "acme"), "a", 3)
        record = create_backup(c.settings, c.policy)
        yield Taken(c, repository(c.settings, c.policy), record, write_policy(c.root, c.root / "repo"))


@pytest.fixture
def env(taken: Taken, monkeypatch: pytest.MonkeyPatch) -> Iterator[Taken]:
    monkeypatch.setenv("OPSCTL_DATABASE_URL", taken.cluster.url)
    monkeypatch.setenv("OPSCTL_DATA_DIR", str(taken.cluster.root))
    # a drill records what its verification found in the catalog: each case starts from a good backup
    with restored(taken.repo.backup_dir(taken.record.id) / "backup.json"):
        yield taken


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from opsctl.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def restored(path: Path) -> Iterator[bytes]:
    """Damage ``path`` inside the block; its bytes come back afterwards (ownership stays)."""
    raw = path.read_bytes()
    try:
        yield raw
    finally:
        path.write_bytes(raw)


def flip(path: Path, offset: int | None = None) -> None:
    raw = bytearray(path.read_bytes())
    at = len(raw) // 2 if offset is None else offset
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@contextmanager
def flipped_data_byte(t: Taken) -> Iterator[list[str]]:
    victim = t.biggest_data_file()
    with restored(victim):
        flip(victim)
        yield [str(victim), "SHA-256 differs"]


@contextmanager
def flipped_wal_byte(t: Taken) -> Iterator[list[str]]:
    victim = t.first_wal_segment()
    assert t.record.start_lsn
    with restored(victim):
        # inside the first record the backup needs: its CRC no longer matches
        flip(victim, parse_lsn(t.record.start_lsn) % segment_size(t.repo) + 26)
        yield [str(t.repo.wal_dir), "does not parse"]


@contextmanager
def bad_manifest(t: Taken) -> Iterator[list[str]]:
    victim = t.data / "backup_manifest"
    with restored(victim) as raw:
        victim.write_bytes(raw[: len(raw) // 2])
        yield [str(victim), "unreadable backup manifest"]


def removed(pick: Callable[[Taken], Path], said: str) -> Callable[[Taken], Any]:
    @contextmanager
    def damage(t: Taken) -> Iterator[list[str]]:
        victim = pick(t)
        with restored(victim):
            victim.unlink()
            yield [str(victim), said]

    return damage


@contextmanager
def truncated_file(t: Taken) -> Iterator[list[str]]:
    victim = t.biggest_data_file()
    with restored(victim) as raw:
        victim.write_bytes(raw[:8192])
        yield [str(victim), f"size 8192, manifest says {len(raw)}"]


@contextmanager
def nothing(t: Taken) -> Iterator[list[str]]:
    yield []


CASES: dict[str, tuple[Callable[[Taken], Any], list[str], list[str]]] = {
    # name: (damage, extra arguments, what the message must say besides what the damage returns)
    "flipped byte in a data file": (flipped_data_byte, [], []),
    "flipped byte in a WAL segment": (flipped_wal_byte, [], []),
    "bad manifest": (bad_manifest, [], []),
    "missing file": (removed(Taken.biggest_data_file, "missing"), [], []),
    "truncated file": (truncated_file, [], []),
    "missing WAL segment": (removed(Taken.first_wal_segment, "WAL segment missing"), [], []),
    "target before any backup": (nothing, ["--target-time", "2000-01-01T00:00:00+00:00"],
                                 ["no good physical backup ending before 2000-01-01T00:00:00+00:00"]),
    "empty repository": (nothing, ["EMPTY"], ["no good physical backup", "opsctl backup create"]),
}


@pytest.mark.parametrize("output", ["table", "json"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_drill_names_its_cause_in_table_and_json(env: Taken, capsys: pytest.CaptureFixture[str],
                                                          case: str, output: str) -> None:
    damage, extra, said = CASES[case]
    policy = env.policy
    if extra == ["EMPTY"]:
        policy, extra = write_policy(env.cluster.root, env.cluster.root / "empty-repo", "empty.yaml"), []
    with damage(env) as named:
        code, out, err = run(capsys, "restore-test", "--policy", str(policy), "-o", output, *extra)
    assert code == 1, err
    assert "TypeError" not in err and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: restore drill failed"), err
    for text in [*named, *said]:
        assert text in last, f"{text!r} not in the error line {last!r}"
    if output == "json":
        report = json.loads(out)
        assert report["passed"] is False
        for text in [*named, *said]:
            assert text in report["error"], report
    else:
        assert "FAILED" in err
        if named:  # the drill got as far as verifying a backup: the table shows the failed check
            assert "backup_verify" in out and "problem(s)" in out, out  # the failed check, however PASSED reads


@pytest.mark.parametrize("output", ["table", "json"])
def test_an_unknown_backup_id_is_refused_before_any_drill_is_recorded(env: Taken, capsys: pytest.CaptureFixture[str],
                                                                      output: str) -> None:
    # an operator's typo is not a failed drill: no audit row, no drill gauges, so no RestoreDrillFailed alert
    with env.cluster.connect() as conn:
        drills = conn.execute("SELECT count(*) FROM ops_log WHERE action = 'restore.drill'").fetchone()
    code, out, err = run(capsys, "restore-test", "--policy", str(env.policy), "-o", output, "--backup",
                         "20000101-000000F")
    assert code == 1, err
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no backup '20000101-000000F'") and env.record.id in last, err
    with env.cluster.connect() as conn:
        assert conn.execute("SELECT count(*) FROM ops_log WHERE action = 'restore.drill'").fetchone() == drills


@contextmanager
def corrupt_catalog_entry(t: Taken, backup_id: str = "20000101-000000F") -> Iterator[Path]:
    """A second backup directory whose backup.json is cut short (a crash, a full disk, a bad copy)."""
    import shutil

    folder = t.repo.backup_dir(backup_id)
    folder.mkdir()
    entry = folder / "backup.json"
    raw = (t.repo.backup_dir(t.record.id) / "backup.json").read_text()
    entry.write_text(raw[: len(raw) // 2])
    try:
        yield entry
    finally:
        shutil.rmtree(folder)


def test_a_corrupt_catalog_entry_is_listed_as_broken_and_fails_verify_naming_the_file(
        env: Taken, capsys: pytest.CaptureFixture[str]) -> None:
    with corrupt_catalog_entry(env) as entry:
        code, out, err = run(capsys, "backup", "list", "--policy", str(env.policy), "-o", "json")
        assert code == 0, err
        rows = {r["id"]: r for r in json.loads(out)}
        assert rows[env.record.id]["broken"] is None and rows[env.record.id]["type"] == "full"
        broken = rows["20000101-000000F"]["broken"]
        assert str(entry) in broken and "unreadable catalog entry" in broken, broken
        assert "JSONDecodeError" not in err and str(entry) in err and "warning" in err, err

        code, out, err = run(capsys, "backup", "list", "--policy", str(env.policy))
        assert code == 0 and "20000101-000000F" in out and env.record.id in out and "unreadable" in out, out

        for args in (["backup", "verify"], ["backup", "verify", "20000101-000000F"]):
            code, out, err = run(capsys, *args, "--policy", str(env.policy))
            assert code == 1, err
            assert "JSONDecodeError" not in err and str(entry) in err.strip().splitlines()[-1], err

        # the drill of the newest readable backup is not stopped by a broken neighbour
        code, out, err = run(capsys, "restore-test", "--policy", str(env.policy), "-o", "json", "--backup",
                             "20000101-000000F")
        assert code == 1 and str(entry) in json.loads(out)["error"], err


def test_verify_of_an_empty_repository_fails_saying_nothing_proves_recoverability(
        env: Taken, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write_policy(env.cluster.root, env.cluster.root / "empty-repo", "empty.yaml")
    for output in ("table", "json"):
        code, out, err = run(capsys, "backup", "verify", "--policy", str(policy), "-o", output)
        assert code == 1, (out, err)
        assert "no backups" in err and "nothing proves" in err and "opsctl backup create" in err, err


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``--debug`` configures the root logger of this process: put it back."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize(("argv", "lifted"), [
    (["restore-test", "--debug"], ["--debug", "restore-test"]),
    (["--debug", "backup", "list"], ["--debug", "backup", "list"]),
    (["backup", "--debug", "verify", "X", "--debug"], ["--debug", "backup", "verify", "X"]),
    (["search", "--", "--debug"], ["search", "--", "--debug"]),  # after "--" it is a value
    (["status"], ["status"]),
])
def test_lift_debug(argv: list[str], lifted: list[str]) -> None:
    from opsctl.cli import lift_debug

    assert lift_debug(argv) == lifted


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_anywhere_and_alone_shows_the_traceback(
        env: Taken, capsys: pytest.CaptureFixture[str], root_logging: None, where: str) -> None:
    policy = write_policy(env.cluster.root, env.cluster.root / "empty-repo", "empty.yaml")
    args = ["backup", "verify", "--policy", str(policy)]
    code, _, err = run(capsys, *(["--debug", *args] if where == "before" else [*args, "--debug"]))
    assert code == 1 and "Traceback" in err and "No such option" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: no backups"), err
    code, _, err = run(capsys, *args)
    assert code == 1 and "Traceback" not in err, err


def test_verify_shows_sizes_for_people_and_keeps_exact_bytes_in_json(env: Taken,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "backup", "verify", "--policy", str(env.policy), "-o", "json")
    assert code == 0, err
    exact = json.loads(out)[0]["bytes"]
    assert isinstance(exact, int) and exact > 1_000_000
    code, out, err = run(capsys, "backup", "verify", "--policy", str(env.policy))
    assert code == 0, err
    assert format_bytes(exact) in out and str(exact) not in out, out
    assert "SIZE" in out and "BYTES" not in out, out
