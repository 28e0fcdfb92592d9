"""`opsctl up --replicas 1`: a streaming standby started, supervised, read from, and stopped with the rest."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port, outside_pytest_tmp, project_root
from tests.test_up import opsctl, ready
from tests.waiting import wait_for


def metric(api: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{api}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(found[1]) if found else None


def child(data_dir: Path, name: str) -> dict[str, Any]:
    record = json.loads((data_dir / "up.json").read_text())
    return next(c for c in record["children"] if c["name"] == name)


def test_up_with_a_replica(tmp_path: Path) -> None:
    data_dir = outside_pytest_tmp("opsctl-test-upr-") / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(data_dir), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opsctl.cli", "up", "--port", str(port), "--workers", "1",
                                 "--replicas", "1", "--no-prometheus", "--no-daemon"],
                                env=env, cwd=tmp_path, stdout=out, stderr=out)
    try:
        wait_for(lambda: ready(api), 180, "the API")
        state = json.loads((data_dir / "state.json").read_text())
        assert len(state["database_replica_urls"]) == 1 and "port=5433" in state["database_replica_urls"][0]
        assert (data_dir / "replica-1" / "standby.signal").exists()
        assert child(data_dir, "replica-1")["state"] == "running"

        tenant = json.loads(opsctl("tenant", "create", "acme", "-o", "json", env=env).stdout)
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "fox.txt").write_text("The quick brown fox jumps over the lazy dog.")
        user_env = {**env, "OPSCTL_API_KEY": tenant["api_key"]}
        opsctl("ingest", str(docs), "--wait", "-o", "json", env=user_env)
        wait_for(lambda: metric(api, "core_db_replica_lag_seconds", replica="replica-1") == 0.0, 60,
                 "the replica to catch up")
        found = json.loads(opsctl("search", "lazy dog", "--mode", "keyword", "-o", "json", env=user_env).stdout)
        assert [r["external_id"] for r in found["results"]] == ["docs/fox.txt"]
        assert metric(api, "core_search_reads_total", reason="fresh", target="replica") == 1.0

        # the standby dies: the supervisor starts it again, and the API sees it come back
        pid = child(data_dir, "replica-1")["processes"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: child(data_dir, "replica-1")["restarts"] >= 1
                 and child(data_dir, "replica-1")["state"] == "running", 120, "replica-1 restarted")
        wait_for(lambda: metric(api, "core_db_replica_up", replica="replica-1") == 1.0, 60, "replica-1 up again")
        status = json.loads(opsctl("status", "-o", "json", env=env).stdout)
        assert any(row["child"] == "replica-1" and row["restarts"] >= 1 for row in status["up"]["children"]), status
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
    assert code == 0, log.read_text()[-3000:]
    assert not (data_dir / "replica-1" / "postmaster.pid").exists(), "the standby stopped cleanly"
    assert not (data_dir / "pg" / "postmaster.pid").exists()


def test_replicas_of_an_external_database_are_refused_as_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(OPSCTL_DATA_DIR=str(tmp_path / "state"), HOME_DIR=str(tmp_path), PYTHONPATH=str(project_root()),
               OPSCTL_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    proc = opsctl("up", "--replicas", "1", "--port", str(free_port()), "--no-prometheus", "--no-daemon", env=env,
                  check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --replicas starts standbys of the embedded PostgreSQL: with OPSCTL_DATABASE_URL set, name your "
        "replicas in OPSCTL_DATABASE_REPLICA_URLS instead")
