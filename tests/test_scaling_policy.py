"""The autoscaling policy: HPA field names, Kubernetes defaults, cross-field checks with reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from opsctl import policy
from opsctl.policy import PolicyError
from opsctl.scaling.policy import AutoscalingPolicy
from tests.conftest import project_root


def problems(tmp_path: Path, service: dict[str, Any]) -> list[str]:
    base = {"target": {"kind": "local"}, "maxReplicas": 5,
            "metrics": [{"name": "backlog", "query": "q", "target": {"type": "AverageValue", "averageValue": 10}}]}
    base.update(service)
    path = tmp_path / "autoscaling.yaml"
    path.write_text(yaml.safe_dump({"services": {"worker": base}}, sort_keys=False))
    with pytest.raises(PolicyError) as info:
        policy.load(AutoscalingPolicy, "autoscaling", path)
    return [f"{p.path}: {p.reason}" for p in info.value.problems]


@pytest.mark.parametrize(("service", "expected"), [
    ({"minReplicas": 6}, "services.worker: maxReplicas (5) must be >= minReplicas (6)"),
    ({"metrics": [{"name": "x", "query": "q", "target": {"type": "Value", "averageValue": 3}}]},
     "services.worker.metrics[0].target: type Value needs value"),
    ({"metrics": [{"name": "x", "query": "q", "target": {"type": "Value", "value": 3, "averageValue": 3}}]},
     "services.worker.metrics[0].target: type Value takes value, not averageValue"),
    ({"metrics": [{"name": "cpu", "query": "q", "target": {"type": "Utilization", "averageUtilization": 70}}]},
     "services.worker.metrics[0]: Utilization compares per-pod usage with per-pod requests: give usageQuery and "
     "requestQuery (one series per pod), not query"),
    ({"metrics": [{"name": "cpu", "usageQuery": "u", "target": {"type": "Utilization", "averageUtilization": 70}}]},
     "services.worker.metrics[0]: Utilization needs per-pod requestQuery (one series per pod, labelled 'pod')"),
    ({"metrics": [{"name": "x", "target": {"type": "AverageValue", "averageValue": 3}}]},
     "services.worker.metrics[0]: type AverageValue needs a query"),
    ({"minReplicas": 0, "activation": {"metric": "nope"}},
     "services.worker: activation.metric 'nope' is not one of the metrics (backlog)"),
    ({"activation": {"metric": "backlog"}},
     "services.worker: activation only applies with minReplicas: 0 (scale to zero)"),
    ({"fallback": {"behavior": "static"}}, "services.worker.fallback: behavior static needs replicas"),
    ({"fallback": {"behavior": "static", "replicas": 9}},
     "services.worker: fallback.replicas (9) must be within minReplicas..maxReplicas (1..5)"),
    ({"behavior": {"scaleUp": {"policies": []}}},
     "services.worker.behavior.scaleUp: policies must not be empty unless selectPolicy is Disabled"),
    ({"behavior": {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 3600}]}}},
     "services.worker.behavior.scaleDown.policies[0].periodSeconds: Input should be less than or equal to 1800"),
    ({"tolerance": {"scaleDown": 1.5}}, "services.worker.tolerance.scaleDown: Input should be less than 1"),
    ({"target": {"kind": "Deployment"}}, "services.worker.target: a Deployment target needs name"),
    ({"maxReplicas": 0}, "services.worker.maxReplicas: Input should be greater than or equal to 1"),
])
def test_cross_field_errors_have_clear_reasons(tmp_path: Path, service: dict[str, Any], expected: str) -> None:
    assert expected in problems(tmp_path, service)


def test_kubernetes_v2_defaults_per_direction_and_field() -> None:
    parsed = AutoscalingPolicy.model_validate({"services": {"w": {
        "target": {"kind": "local"}, "maxReplicas": 3, "tolerance": 0.05,
        "metrics": [{"name": "b", "query": "q", "target": {"type": "AverageValue", "averageValue": 1}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}})
    svc = parsed.services["w"]
    assert (svc.tolerance.scaleUp, svc.tolerance.scaleDown) == (0.05, 0.05)
    up, down = svc.behavior.scaleUp, svc.behavior.scaleDown
    assert (up.stabilizationWindowSeconds, up.selectPolicy) == (0, "Max")
    assert [(p.type, p.value, p.periodSeconds) for p in up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert (down.stabilizationWindowSeconds, [(p.type, p.value, p.periodSeconds) for p in down.policies]) == (
        60, [("Percent", 100, 15)])
    assert (svc.minReplicas, svc.fallback.behavior, svc.fallback.failureThreshold, svc.cooldownPeriod) == (
        1, "hold", 3, 300)


@pytest.mark.parametrize("path", ["policies/autoscaling.yaml", "manifests/base/policies/autoscaling.yaml"])
def test_shipped_policy_validates_and_encodes_the_seed_thresholds(path: str) -> None:
    """`opsctl up`'s policy scales the worker pool; the Kubernetes one the worker and API Deployments."""
    file = project_root() / path
    ok, found = policy.validate_paths([file])
    assert (ok, found) == ([str(file)], [])
    shipped = policy.load(AutoscalingPolicy, "autoscaling", file)
    worker = shipped.services["core-worker"]
    backlog = next(m for m in worker.metrics if m.name == "backlog")
    assert backlog.target.amount == 100 and backlog.query and "in_flight" in backlog.query


def test_kubernetes_policy_encodes_the_seed_thresholds_of_the_api() -> None:
    shipped = policy.load(AutoscalingPolicy, "autoscaling",
                          project_root() / "manifests" / "base" / "policies" / "autoscaling.yaml")
    api = shipped.services["core-api"]
    targets = {m.name: (m.target.type, m.target.amount) for m in api.metrics}
    assert targets["cpu"] == ("Utilization", 70) and targets["memory"] == ("Utilization", 80)
    assert targets["p95-latency"] == ("Value", 2) and targets["error-rate"] == ("Value", 0.01)
    cpu = next(m for m in api.metrics if m.name == "cpu")
    memory = next(m for m in api.metrics if m.name == "memory")
    assert cpu.tolerance and round(70 * (1 - cpu.tolerance.scaleDown)) == 30
    assert memory.tolerance and round(80 * (1 - memory.tolerance.scaleDown)) == 50
