"""End to end with a real Prometheus, a real API and a real local worker pool, driven by `opsctl scale`:
fill the queue → scale up from zero → drain → stabilization holds → scale to zero after the window;
manual set, Prometheus stopped → fallback (no scale-down), pause, explain, and the daemon job.

The test waits on events (Prometheus seeing the backlog, the queue drained), never on the clock:
the decisions inside and after the stabilization window run the same cycle as `opsctl scale
--apply` with an injected clock, so the window passes without sleeping through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from core.config import Settings
from core.embedded import EmbeddedPrometheus, prometheus_binary
from core.workerpool import WorkerPool
from opsctl.policy import load
from opsctl.scaling import service
from opsctl.scaling.jobs import job_autoscale
from opsctl.scaling.policy import AutoscalingPolicy
from tests.conftest import RunningApi, free_port, outside_pytest_tmp, project_root
from tests.test_up import prom_query
from tests.waiting import wait_for

WINDOW = 300  # scaleDown stabilization window of the test policy, seconds: passed on a clock, never waited for

POLICY = """
prometheus: {{url: "{prom}", timeoutSeconds: 2}}
services:
  core-worker:
    target: {{kind: local}}
    minReplicas: 0
    maxReplicas: 3
    cooldownPeriod: 0
    metrics:
      - name: backlog
        query: max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)
        target: {{type: AverageValue, averageValue: 10}}
    behavior:
      scaleDown: {{stabilizationWindowSeconds: {window}}}
    fallback: {{failureThreshold: 3, behavior: hold}}
"""


@pytest.fixture
def system(settings: Settings, db_url: str, redis_url: str) -> Iterator[dict[str, Any]]:
    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    root = outside_pytest_tmp("opsctl-test-scale-")
    pool = WorkerPool(env={"OPSCTL_DATABASE_URL": db_url, "OPSCTL_REDIS_URL": redis_url,
                           "OPSCTL_DATA_DIR": str(root), "OPSCTL_EMBEDDER": "hash"}, replicas=0,
                      targets_file=root / "prom" / "workers.json", stop_grace_seconds=10)
    api = RunningApi(settings, workers=pool)
    prom = EmbeddedPrometheus(root / "prom", f"127.0.0.1:{api.port}", port=free_port(), scrape_interval="1s")
    prom.data_dir.mkdir(parents=True, exist_ok=True)
    prom.start()
    pool.start()
    policies = root / "policies"
    policies.mkdir()
    (policies / "autoscaling.yaml").write_text(POLICY.format(prom=prom.url, window=WINDOW))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSCTL_")}
    env.update(PYTHONPATH=str(project_root()), OPSCTL_DATA_DIR=str(root / "none"), OPSCTL_DATABASE_URL=db_url,
               OPSCTL_API_URL=api.url, OPSCTL_ADMIN_TOKEN="admin-secret", OPSCTL_POLICY_DIR=str(policies))
    try:
        yield {"api": api, "pool": pool, "prom": prom, "env": env, "policies": policies,
               "settings": settings.model_copy(update={"api_url": api.url, "prometheus_url": prom.url})}
    finally:
        pool.stop(timeout=10)
        prom.stop()
        api.close()


def scale(env: dict[str, str], *args: str, code: int = 0) -> Any:
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", "scale", *args, "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout)


def cycle_at(system: dict[str, Any], at: datetime) -> Any:
    """One `opsctl scale core-worker --apply` cycle (the same service.run) with its clock at ``at``."""
    policy = load(AutoscalingPolicy, "autoscaling", directory=system["policies"])
    [outcome] = service.run(system["settings"], policy, ["core-worker"], apply=True, now=lambda: at)
    return outcome.as_dict()


def backlog(prom: EmbeddedPrometheus) -> float | None:
    found = prom_query(prom.url, "max(core_ingest_queue_depth) + max(core_ingest_queue_in_flight)")
    return float(found[0]["value"][1]) if found else None


def test_scale_up_drain_stabilize_scale_down_and_fallback(system: dict[str, Any], tenant: Any) -> None:
    env, prom, api = system["env"], system["prom"], system["api"]
    docs = [{"external_id": f"doc-{i}", "text": f"document number {i} about autoscaling"} for i in range(120)]
    accepted = httpx.post(f"{api.url}/v1/documents", json={"documents": docs}, timeout=30,
                          headers={"Authorization": f"Bearer {tenant.api_key}"})
    assert accepted.status_code == 202
    wait_for(lambda: (backlog(prom) or 0) >= 120, 30, "Prometheus to see the backlog")

    # from zero, through the scale-up policy, capped by maxReplicas
    up = scale(env, "core-worker", "--apply")
    assert (up["current_replicas"], up["desired_replicas"], up["applied"]) == (0, 3, True), up["reason"]
    assert up["limited_by"] == ["max"] and up["reason"].startswith("scale up 0 → 3: active, scaling from zero")
    admin = {"Authorization": "Bearer admin-secret"}
    assert httpx.get(f"{api.url}/admin/workers", headers=admin, timeout=10).json()["replicas"] == 3
    decided_at = datetime.fromisoformat(scale(env, "explain", str(up["event_id"]))["snapshot"]["now"])

    # the queue drains; a run inside the window keeps 3 (the window remembers the earlier recommendation)
    wait_for(lambda: backlog(prom) == 0, 45, "the workers to drain the queue and Prometheus to see it")
    held = cycle_at(system, decided_at + timedelta(seconds=WINDOW - 1))
    assert (held["desired_replicas"], held["applied"], held["limited_by"]) == (3, False, ["stabilization"]), held
    assert held["reason"].endswith(f"limited by scaleDown stabilization window {WINDOW}s (highest recent "
                                   "recommendation 12)")  # ceil(120 / 10) before the max of 3
    held_event = held["event_id"]

    # after the window: down to zero (cooldownPeriod 0), through the scale-down behavior
    down = cycle_at(system, decided_at + timedelta(seconds=WINDOW + 1))
    assert (down["current_replicas"], down["desired_replicas"], down["applied"]) == (3, 0, True), down
    assert httpx.get(f"{api.url}/admin/workers", headers=admin, timeout=10).json()["replicas"] == 0

    # by hand, audited
    manual = scale(env, "set", "core-worker", "2", "--reason", "e2e test", "--apply")
    assert (manual["current_replicas"], manual["desired_replicas"], manual["applied"]) == (0, 2, True)

    # Prometheus gone: every metric fails → hold (never read as 0 and scaled down), printed, exit 1
    prom.stop()
    blind = scale(env, "core-worker", "--apply", code=1)
    assert (blind["desired_replicas"], blind["limited_by"], blind["applied"]) == (2, ["fallback"], False), blind
    assert "prometheus: cannot reach" in blind["metrics"][0]["error"]
    assert blind["consecutive_failures"] == 1
    # the daemon's job: the fallback decided, so the run succeeds and says the metrics failed (a blind
    # autoscaler is alert AutoscalerMetricsUnavailable's, over a window, not a failed job at every start)
    sentence = job_autoscale(system["settings"], system["policies"])
    assert sentence.startswith("core-worker: keep 2: all 1 metric(s) failed") and "fallback hold" in sentence
    assert httpx.get(f"{api.url}/admin/workers", headers=admin, timeout=10).json()["replicas"] == 2

    # pause: nothing changes, persisted for the daemon too
    scale(env, "pause", "core-worker", "--reason", "e2e")
    paused = scale(env, "core-worker", "--apply")
    assert paused["limited_by"] == ["paused"]
    scale(env, "resume", "core-worker")

    # explain replays the stored snapshot to the same decision
    explained = scale(env, "explain", str(held_event))
    assert explained["same"] is True and explained["stored"]["reason"] == held["reason"]
    assert explained["snapshot"]["metrics"]["backlog"] == {"value": 0.0}


def test_explain_unknown_event_and_unreachable_target(system: dict[str, Any]) -> None:
    env = system["env"]
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", "scale", "explain", "999999"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no scale.decide event 999999" in proc.stderr
    broken = scale({**env, "OPSCTL_API_URL": "http://127.0.0.1:9"}, "core-worker", code=1)
    assert broken["error"].startswith("local target: cannot reach http://127.0.0.1:9")
    assert broken["desired_replicas"] is None
