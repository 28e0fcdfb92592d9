"""A command run while the system is down says why in one line: ``opsctl up`` is not running on its
data dir (stopped at …, or its pid gone) when the address came from its state file; otherwise which
PostgreSQL (or API) does not answer and the driver's reason. The real CLI, in this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import write_state
from tests.conftest import free_port

STOPPED_AT = "2026-11-26T18:03:27.418+00:00"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from opsctl.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def up_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data dir of an ``opsctl up`` that is not running: its socket directory holds no server."""
    monkeypatch.setenv("OPSCTL_DATA_DIR", str(tmp_path))
    (tmp_path / "run").mkdir()
    return tmp_path


def publish(data_dir: Path, **state: object) -> dict[str, object]:
    socket_dir = data_dir.absolute() / "run"
    full = {"data_dir": str(data_dir), "database_url": f"postgresql://pgserver@/opsctl?host={socket_dir}&port=5432",
            "api_url": f"http://127.0.0.1:{free_port()}", "admin_token": "t", **state}
    write_state(data_dir, full)
    return full


@pytest.mark.parametrize("command", [["status"], ["events"], ["events", "--all", "-o", "json"], ["tenant", "list"],
                                     ["partitions", "list"]])
def test_a_stopped_opsctl_up_is_named_with_when_it_stopped(up_dir: Path, capsys: pytest.CaptureFixture[str],
                                                            command: list[str]) -> None:
    publish(up_dir, stopped_at=STOPPED_AT)
    code, out, err = run(capsys, *command)
    assert (code, out) == (1, "")
    assert err == (f"error: opsctl up is not running on {up_dir} (it stopped at 2026-11-26 18:03:27Z): "
                   f"start it with `opsctl up --data-dir {up_dir}`\n")


def test_a_killed_opsctl_up_is_named_by_its_pid(up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pid = dead_pid()
    publish(up_dir, pid=pid, started_at=STOPPED_AT)
    code, _, err = run(capsys, "status")
    assert code == 1
    assert err == (f"error: opsctl up is not running on {up_dir} (its pid {pid} is gone): "
                   f"start it with `opsctl up --data-dir {up_dir}`\n")


def test_in_the_default_data_dir_it_says_make_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPSCTL_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    publish(Path(".opsctl"), stopped_at=STOPPED_AT)
    code, _, err = run(capsys, "events")
    assert code == 1
    assert err == ("error: opsctl up is not running on .opsctl (it stopped at 2026-11-26 18:03:27Z): "
                   "start it with `make up` (or `opsctl up`)\n")


def test_a_running_opsctl_up_whose_database_does_not_answer_gets_the_drivers_reason(
        up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    publish(up_dir, pid=os.getpid())  # alive: not "stopped", whatever the database says
    code, _, err = run(capsys, "status")
    assert code == 1
    assert err.startswith(f"error: cannot connect to PostgreSQL at {up_dir}/run/.s.PGSQL.5432: "), err
    assert "No such file or directory" in err and len(err.splitlines()) == 1


def test_an_address_not_from_opsctl_up_is_named_without_its_password(
        up_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    publish(up_dir, stopped_at=STOPPED_AT)
    port = free_port()
    monkeypatch.setenv("OPSCTL_DATABASE_URL", f"postgresql://ops:s3cret@127.0.0.1:{port}/opsctl")
    code, _, err = run(capsys, "events")
    assert code == 1
    assert err.startswith(f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}: "), err
    assert "Connection refused" in err and "s3cret" not in err and len(err.splitlines()) == 1


def test_the_api_of_a_stopped_opsctl_up(up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = publish(up_dir, stopped_at=STOPPED_AT)
    code, out, err = run(capsys, "search", "refunds", "--api-key", "k")
    assert (code, out) == (1, "")
    assert err == (f"error: the API at {state['api_url']} is not answering: opsctl up is not running on {up_dir} "
                   f"(it stopped at 2026-11-26 18:03:27Z): start it with `opsctl up --data-dir {up_dir}`\n")


def test_the_api_of_a_running_opsctl_up_that_refuses(up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    state = publish(up_dir, pid=os.getpid())
    code, _, err = run(capsys, "search", "refunds", "--api-key", "k")
    assert code == 1
    assert err == f"error: cannot reach the API at {state['api_url']}: Connection refused: is opsctl up running?\n"


def test_an_api_url_given_by_hand_that_refuses(up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(up_dir, stopped_at=STOPPED_AT)
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "search", "refunds", "--api-url", url, "--api-key", "k")
    assert code == 1
    assert err == f"error: cannot reach the API at {url}: Connection refused\n"


def test_the_redis_of_a_stopped_opsctl_up(up_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish(up_dir, stopped_at=STOPPED_AT, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    code, out, err = run(capsys, "cache", "status")
    assert (code, out) == (1, "")
    assert err.strip().splitlines()[-1] == (f"error: opsctl up is not running on {up_dir} (it stopped at "
                                            f"2026-11-26 18:03:27Z): start it with `opsctl up --data-dir {up_dir}`")


def test_a_redis_given_by_hand_that_refuses(up_dir: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("OPSCTL_REDIS_URL", url)
    code, out, err = run(capsys, "cache", "status")
    assert (code, out) == (1, "")
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: Redis at {url} is unreachable: Error 111 connecting to 127.0.0.1:"), err
