"""`opsctl up` as a user runs it: a second terminal finds it, Prometheus scrapes it, Ctrl-C stops it,
and a second run resumes on the same data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.embedded import prometheus_binary
from tests.conftest import free_port, outside_pytest_tmp, project_root
from tests.waiting import wait_for


def opsctl(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", *args], env=env, cwd=env["HOME_DIR"],
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc





def start_up(env: dict[str, str], port: int, prom_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "opsctl.cli", "up", "--port", str(port), "--prometheus-port", str(prom_port),
             "--workers", "1"], env=env, cwd=env["HOME_DIR"], stdout=out, stderr=out)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def prom_query(url: str, query: str) -> list[dict[str, Any]]:
    try:
        body = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
    except httpx.HTTPError:
        return []
    return list(body["data"]["result"])


def test_up_second_terminal_prometheus_ctrl_c_and_resume(tmp_path: Path) -> None:
    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    data_dir = outside_pytest_tmp("opsctl-test-up-") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()))
    port, prom_port = free_port(), free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    proc = start_up(env, port, prom_port, log)
    try:
        wait_for(lambda: ready(api), 90, "the API")
        state = json.loads((data_dir / "state.json").read_text())
        assert state["api_url"] == api and state["pid"] == proc.pid

        # a second terminal: no URLs given, everything found through the data dir
        tenant = json.loads(opsctl("tenant", "create", "acme", "-o", "json", env=env).stdout)
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "fox.txt").write_text("The quick brown fox jumps over the lazy dog.")
        (docs / "more.jsonl").write_text('{"external_id": "k8s", "text": "Horizontal pod autoscaling"}\n')
        user_env = {**env, "OPSCTL_API_KEY": tenant["api_key"]}
        ingested = json.loads(opsctl("ingest", str(docs), "--wait", "-o", "json", env=user_env).stdout)
        assert ingested == {"files": 2, "documents": 2, "jobs": 2, "refused": [], "statuses": {"done": 2}}
        found = json.loads(opsctl("search", "lazy dog", "--mode", "keyword", "-o", "json", env=user_env).stdout)
        assert [r["external_id"] for r in found["results"]] == ["docs/fox.txt"]

        # the embedded scale target, and Prometheus scraping the API and every worker
        admin = {"Authorization": f"Bearer {state['admin_token']}"}
        resized = httpx.put(f"{api}/admin/workers", json={"replicas": 3}, headers=admin, timeout=10).json()
        assert resized["replicas"] == 3 and resized["running"] == 3
        prom = f"http://127.0.0.1:{prom_port}"
        wait_for(lambda: len([r for r in prom_query(prom, 'up{job="core-worker"} == 1')]) == 3, 60,
                 "Prometheus to scrape 3 workers")
        wait_for(lambda: prom_query(prom, 'core_workers{state="running"} == 3'), 60, "core_workers == 3")
        assert prom_query(prom, 'up{job="core-api"} == 1')

        # the policy daemon runs too: it leads, Prometheus scrapes it, and its runs are in the audit log
        wait_for(lambda: prom_query(prom, 'opsctl_daemon_leader{job="opsctl-daemon"} == 1'), 60, "the daemon leading")
        wait_for(lambda: json.loads(opsctl("events", "--all", "--action", "daemon.job", "-o", "json",
                                           env=env).stdout), 60, "a daemon job run")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)
    assert code == 0, log.read_text()[-2000:]
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL stopped cleanly"
    assert "pid" not in json.loads((data_dir / "state.json").read_text())
    leftovers = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes left running: {leftovers}"

    # run it again: same data, same tenant
    proc = start_up(env, port, prom_port, log)
    try:
        wait_for(lambda: ready(api), 90, "the API after restart")
        again = json.loads(opsctl("search", "lazy dog", "--mode", "keyword", "-o", "json", env=user_env).stdout)
        assert [r["external_id"] for r in again["results"]] == ["docs/fox.txt"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0


def test_cli_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(tmp_path / "none"), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()))
    not_running = opsctl("tenant", "list", env=env, check=False)
    assert not_running.returncode == 2
    assert not_running.stderr.strip().splitlines() == [
        "error: no database: start the system with `opsctl up` (or set OPSCTL_DATABASE_URL)"]
    usage = opsctl("search", env=env, check=False)
    assert usage.returncode == 2
    assert "Missing argument" in usage.stderr
    bad_setting = opsctl("tenant", "list", env={**env, "OPSCTL_EMBED_DIM": "three"}, check=False)
    assert bad_setting.returncode == 2
    assert bad_setting.stderr.startswith("error: invalid setting embed_dim")
    unreachable = opsctl("search", "x", "--api-url", "http://127.0.0.1:9", "--api-key", "k", env=env, check=False)
    assert unreachable.returncode == 1
    assert "cannot reach the API" in unreachable.stderr and "Traceback" not in unreachable.stderr
    missing = opsctl("ingest", str(tmp_path / "nope.txt"), "--api-url", "http://x", "--api-key", "k", env=env,
                     check=False)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr


@pytest.mark.parametrize("command", [[], ["up"], ["daemon"], ["status"], ["events"], ["tenant"],
                                     ["tenant", "create"], ["tenant", "list"], ["tenant", "rotate-key"], ["ingest"],
                                     ["search"]])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    env = {**os.environ, "HOME_DIR": str(project_root())}
    out = opsctl(*command, "--help", env=env).stdout
    assert "Example:" in out, out
