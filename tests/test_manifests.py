"""Kubernetes manifests: kustomize builds them, kubernetes-validate accepts them, the alerts pass
promtool's checks and unit tests, the policies ConfigMap is policies/ with the Kubernetes autoscaling policy, and
the dashboard shows what on-call needs."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.cli_citations import Citation, problems, root_command
from tests.conftest import project_root

ROOT = project_root()
BASE = ROOT / "manifests" / "base"
CRD_KINDS = {"PrometheusRule", "ServiceMonitor"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# metrics the manifests may use: the core's (core/metrics.py, core/redis_metrics.py) and the ones opsctl exports
OPSCTL_METRICS = {
    "opsctl_job_runs_total", "opsctl_job_duration_seconds", "opsctl_job_last_success_timestamp_seconds",
    "opsctl_daemon_leader", "opsctl_daemon_policies_loaded", "opsctl_policy_reload_errors_total",
    "opsctl_restore_drill_last_success_timestamp_seconds",
    "opsctl_restore_drill_duration_seconds", "opsctl_restore_drill_success", "opsctl_changes_total",
    "opsctl_backup_last_success_timestamp_seconds", "opsctl_partitions_premade_ahead", "opsctl_partition_default_rows",
    "opsctl_vector_index_recall", "opsctl_scale_desired_replicas", "opsctl_scale_current_replicas",
    "opsctl_wal_push_lag_seconds", "opsctl_wal_push_max_lag_seconds", "opsctl_wal_push_failures_total",
    "opsctl_wal_last_push_timestamp_seconds", "opsctl_wal_spool_segments",
    "opsctl_scale_max_replicas", "opsctl_scale_metric_errors_total",
    "opsctl_disk_free_bytes", "opsctl_disk_size_bytes", "opsctl_certificate_expiry_timestamp_seconds",
    "opsctl_slow_queries_total", "opsctl_slow_queries_threshold_ms",
}


def need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} must be installed (kubectl client, Debian prometheus package): this test never skips"
    return path


def kustomize(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([need("kubectl"), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    return kustomize(BASE)


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def known_metrics() -> set[str]:
    source = "".join((ROOT / "core" / name).read_text() for name in ("metrics.py", "redis_metrics.py",
                                                                      "usage/metrics.py"))
    names = set(re.findall(r'"(core_[a-z0-9_]+)"', source))
    assert "core_ingest_queue_depth" in names and "core_http_request_duration_seconds" in names
    return names | OPSCTL_METRICS


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\b((?:core|opsctl)_[a-z0-9_]+)", expr):
        names.add(re.sub(r"_(bucket|count|sum)$", "", name) if name.startswith("core_") else name)
    return names


def test_kustomize_builds_every_piece(built: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in built)
    assert kinds == sorted([
        ("Namespace", "opsctl"), ("ServiceAccount", "opsctl-daemon"), ("Role", "opsctl-daemon"),
        ("RoleBinding", "opsctl-daemon"), ("ConfigMap", "opsctl-config"), ("ConfigMap", "opsctl-grafana-dashboard"),
        ("ConfigMap", "opsctl-policies"), ("Service", "core-api"), ("Service", "core-worker"),
        ("Service", "opsctl-daemon"), ("Deployment", "core-api"), ("Deployment", "core-worker"),
        ("Deployment", "opsctl-daemon"), ("PodDisruptionBudget", "core-api"), ("PrometheusRule", "opsctl"),
        ("ServiceMonitor", "core-api"), ("ServiceMonitor", "core-worker"), ("ServiceMonitor", "opsctl-daemon"),
    ])
    assert all(o["metadata"].get("namespace") == "opsctl" for o in built if o["kind"] != "Namespace")


def check_prometheus_rule(obj: dict[str, Any]) -> None:
    """The PrometheusRule CRD's structure (monitoring.coreos.com/v1), checked field by field."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj["spec"]) == {"groups"}
    names = [g["name"] for g in obj["spec"]["groups"]]
    assert len(names) == len(set(names)), "group names must be unique"
    for group in obj["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "partial_response_strategy", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert ("alert" in rule) != ("record" in rule) and isinstance(rule["expr"], str)
            assert "for" not in rule or DURATION.match(rule["for"]), rule
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in rule.get(key, {}).values()), rule


def check_service_monitor(obj: dict[str, Any], services: list[dict[str, Any]]) -> None:
    """The ServiceMonitor CRD's structure, and that it selects a Service exposing its port."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    spec = obj["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    wanted = spec["selector"]["matchLabels"]
    matched = [s for s in services if wanted.items() <= s["metadata"].get("labels", {}).items()]
    assert len(matched) == 1, f"ServiceMonitor {obj['metadata']['name']} selects {len(matched)} services"
    ports = {p["name"] for p in matched[0]["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels", "scheme"}
        assert endpoint["port"] in ports and endpoint["path"].startswith("/")
        assert DURATION.match(endpoint["interval"])
        assert isinstance(endpoint.get("honorLabels", False), bool)


def test_kubernetes_validate_accepts_every_object(built: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    services = [o for o in built if o["kind"] == "Service"]
    for obj in built:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # the package ships only core Kubernetes schemas; the two Prometheus Operator CRDs are checked here
            assert obj["kind"] in CRD_KINDS, f"no schema for {obj['kind']}"
            if obj["kind"] == "PrometheusRule":
                check_prometheus_rule(obj)
            else:
                check_service_monitor(obj, services)


def test_kubernetes_validate_rejects_a_broken_object(built: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(built, "Deployment", "core-api")))
    broken["spec"]["revisionHistoryLimit"] = "five"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_api_has_probes_resources_and_a_pdb(built: list[dict[str, Any]]) -> None:
    api = one(built, "Deployment", "core-api")
    (container,) = containers(api)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    pdb = one(built, "PodDisruptionBudget", "core-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] == 1
    service = one(built, "Service", "core-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    for deployment in (o for o in built if o["kind"] == "Deployment"):
        for c in containers(deployment):
            assert c["resources"]["requests"], deployment["metadata"]["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_daemon_rbac_grants_only_what_scaling_needs(built: list[dict[str, Any]]) -> None:
    daemon = one(built, "Deployment", "opsctl-daemon")
    assert daemon["spec"]["replicas"] == 2
    account = daemon["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == one(built, "ServiceAccount", "opsctl-daemon")["metadata"]["name"]
    rules = {(tuple(r["apiGroups"]), res, tuple(sorted(r["verbs"])))
             for r in one(built, "Role", "opsctl-daemon")["rules"] for res in r["resources"]}
    assert rules == {
        (("apps",), "deployments", ("get", "list", "watch")), (("apps",), "statefulsets", ("get", "list", "watch")),
        (("",), "pods", ("get", "list", "watch")),
        (("apps",), "deployments/scale", ("get", "patch", "update")),
        (("apps",), "statefulsets/scale", ("get", "patch", "update")),
        (("autoscaling",), "horizontalpodautoscalers", ("list",)), (("keda.sh",), "scaledobjects", ("list",)),
    }
    binding = one(built, "RoleBinding", "opsctl-daemon")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "opsctl-daemon"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "opsctl"}]
    assert not [o for o in built if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


def test_a_daemon_replica_without_a_valid_policy_set_is_not_ready_but_still_scraped(
        built: list[dict[str, Any]]) -> None:
    """A rollout of a bad ConfigMap stops at its first new pod (not ready), so the old replicas keep
    enforcing; Prometheus still scrapes that pod, whose opsctl_daemon_policies_loaded 0 the alert reads."""
    daemon = one(built, "Deployment", "opsctl-daemon")
    (container,) = containers(daemon)
    probe = container["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/readyz" and probe["port"] in ports
    assert f"--metrics-port {ports[probe['port']]}" in " ".join(container["command"])
    service = one(built, "Service", "opsctl-daemon")
    assert service["spec"]["publishNotReadyAddresses"] is True
    rule = one(built, "PrometheusRule", "opsctl")
    (alert,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "DaemonPoliciesNotLoaded"]
    assert "opsctl_daemon_policies_loaded" in alert["expr"]


def test_urls_come_from_secret_references_and_no_secret_is_committed(built: list[dict[str, Any]]) -> None:
    assert not [o for o in built if o["kind"] == "Secret"]
    for deployment in (o for o in built if o["kind"] == "Deployment"):
        env = {e["name"]: e for c in containers(deployment) for e in c.get("env", [])}
        for name in ("OPSCTL_DATABASE_URL", "OPSCTL_REDIS_URL"):
            assert set(env[name]) == {"name", "valueFrom"}, (deployment["metadata"]["name"], name)
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "opsctl-secrets" and ref["key"] in {"database-url", "redis-url"}
    text = json.dumps(built)
    assert not re.search(r"(postgres(ql)?|redis)://", text), "a database or Redis URL is written in the manifests"


def kubernetes_policies() -> dict[str, str]:
    """The policy files of the Kubernetes deployment (manifests/base/policies), by file name."""
    return {p.name: p.read_text() for p in sorted((BASE / "policies").glob("*.y*ml"))}


def test_policies_configmap_is_the_policies_directory_with_the_kubernetes_policies(
        built: list[dict[str, Any]]) -> None:
    sync = subprocess.run(["python3", str(ROOT / "manifests" / "sync_policies.py"), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert sync.returncode == 0, sync.stderr
    configmap = one(built, "ConfigMap", "opsctl-policies")
    files = {p.name: p.read_text() for p in sorted((ROOT / "policies").glob("*.y*ml"))}
    kubernetes = kubernetes_policies()
    assert "autoscaling.yaml" in kubernetes
    assert configmap.get("data", {}) == {**files, **kubernetes}
    # every file of manifests/base/policies is merged by the base's generator (kustomize has no globs)
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (merge,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "opsctl-policies"]
    assert merge["behavior"] == "merge"
    assert sorted(merge["files"]) == sorted(f"policies/{name}" for name in kubernetes)
    daemon = one(built, "Deployment", "opsctl-daemon")
    volumes = {v["name"]: v for v in daemon["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == configmap["metadata"]["name"]
    config = one(built, "ConfigMap", "opsctl-config")["data"]
    (container,) = containers(daemon)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["policies"] == config["OPSCTL_POLICY_DIR"]


def test_the_api_and_workers_read_the_tiers_from_the_policies_configmap(built: list[dict[str, Any]]) -> None:
    """OPSCTL_TENANTS_POLICY names a file of the mounted opsctl-policies in both, and it is a valid tenants policy."""
    from core.tiers import parse_policy

    config = one(built, "ConfigMap", "opsctl-config")["data"]
    configmap = one(built, "ConfigMap", "opsctl-policies")
    tiers = Path(config["OPSCTL_TENANTS_POLICY"])
    for name in ("core-api", "core-worker"):
        deployment = one(built, "Deployment", name)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        (container,) = containers(deployment)
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts[str(tiers.parent)]
        assert mount.get("readOnly") is True
        assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"], name
    policy = parse_policy(configmap["data"][tiers.name], tiers.name)
    assert policy.default_tier in policy.tiers


def test_the_daemon_in_the_cluster_gets_valid_policies_that_scale_the_deployments(
        built: list[dict[str, Any]], tmp_path: Path) -> None:
    """What the daemon pods mount validates, and autoscales only workloads the manifests deploy."""
    from opsctl import policy
    from opsctl.scaling.policy import AutoscalingPolicy

    mounted = tmp_path / "policies"
    mounted.mkdir()
    for name, text in one(built, "ConfigMap", "opsctl-policies")["data"].items():
        (mounted / name).write_text(text)
    ok, found = policy.validate_paths([mounted])
    assert found == [] and len(ok) == len(list(mounted.iterdir()))
    autoscaling = policy.load(AutoscalingPolicy, "autoscaling", mounted / "autoscaling.yaml")
    workloads = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in built
                 if o["kind"] in ("Deployment", "StatefulSet")}
    targets = {name: (svc.target.kind, svc.target.namespace, svc.target.name)
               for name, svc in autoscaling.services.items()}
    assert targets == {"core-api": ("Deployment", "opsctl", "core-api"),
                       "core-worker": ("Deployment", "opsctl", "core-worker")}
    assert set(targets.values()) <= workloads
    # a workload the daemon scales sets no replicas: `kubectl apply` must not reset what it decided
    for o in built:
        if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) in targets.values():
            assert "replicas" not in o["spec"], o["metadata"]["name"]
    # the same worker metrics and behavior as on one machine: only the target differs
    local = policy.load(AutoscalingPolicy, "autoscaling", ROOT / "policies" / "autoscaling.yaml")
    for name, svc in local.services.items():
        assert svc.model_copy(update={"target": autoscaling.services[name].target}) == autoscaling.services[name]


def test_policies_generator_tracks_added_files(tmp_path: Path) -> None:
    """With real policy files in a copy of the tree, the generated ConfigMap carries each file verbatim."""
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("__pycache__"))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cache.yaml").write_text("ttl:\n  search: 300\n")
    (policies / "schedule.yml").write_text("jobs:\n  autoscale: {every: 30s}\n")
    script = tmp_path / "manifests" / "sync_policies.py"
    assert subprocess.run(["python3", str(script), "--check"], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(["python3", str(script)], capture_output=True, timeout=60).returncode == 0
    assert subprocess.run(["python3", str(script), "--check"], capture_output=True, timeout=60).returncode == 0
    spec = importlib.util.spec_from_file_location("sync_policies", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.policy_files(policies) == ["cache.yaml", "schedule.yml"]
    configmap = one(kustomize(tmp_path / "manifests" / "base"), "ConfigMap", "opsctl-policies")
    assert configmap["data"] == {"cache.yaml": "ttl:\n  search: 300\n",
                                 "schedule.yml": "jobs:\n  autoscale: {every: 30s}\n", **kubernetes_policies()}


def rules_file(built: list[dict[str, Any]], directory: Path) -> Path:
    """The PrometheusRule's spec as a plain Prometheus rules file."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(one(built, "PrometheusRule", "opsctl")["spec"], sort_keys=False))
    return path


def test_promtool_check_rules(built: list[dict[str, Any]], tmp_path: Path) -> None:
    proc = subprocess.run([need("promtool"), "check", "rules", str(rules_file(built, tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = sum(len(group["rules"]) for group in one(built, "PrometheusRule", "opsctl")["spec"]["groups"])
    assert rules >= 21 and f"SUCCESS: {rules} rules found" in proc.stdout  # the WAL push, replicas', host and earlier


def test_promtool_unit_tests_cover_firing_and_quiet_cases(built: list[dict[str, Any]], tmp_path: Path) -> None:
    tests = sorted((ROOT / "manifests" / "tests").glob("*.yaml"))
    assert tests
    rules_file(built, tmp_path)
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        shutil.copy(test, tmp_path / test.name)
        for case in yaml.safe_load(test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    covered = firing & quiet
    assert len(covered) >= 4, f"alerts with firing and quiet cases: {sorted(covered)}"
    proc = subprocess.run([need("promtool"), "test", "rules", *(t.name for t in tests)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(built: list[dict[str, Any]], tmp_path: Path) -> None:
    """The harness is not vacuous: a wrong expectation makes promtool fail."""
    rules_file(built, tmp_path)
    case = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [{"series": 'opsctl_restore_drill_success{pod="a",repo="local"}',
                                         "values": "1x20"}],
        "alert_rule_test": [{"eval_time": "10m", "alertname": "RestoreDrillFailed",
                             "exp_alerts": [{"exp_labels": {"severity": "critical"}}]}]}]}
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(case))
    proc = subprocess.run([need("promtool"), "test", "rules", "wrong.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0


def test_alerts_and_dashboard_use_only_exported_metrics(built: list[dict[str, Any]]) -> None:
    known = known_metrics()
    rule = one(built, "PrometheusRule", "opsctl")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(one(built, "ConfigMap", "opsctl-grafana-dashboard")["data"]["opsctl.json"])
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    unknown = {name for expr in exprs for name in metric_names(expr)} - known
    assert not unknown, f"metrics nobody exports: {sorted(unknown)}"
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["severity"] in {"critical", "warning", "info"}
            assert f"opsctl runbook show {r['alert']}" in r["annotations"]["description"]


def test_dashboard_shows_what_on_call_needs(built: list[dict[str, Any]]) -> None:
    configmap = one(built, "ConfigMap", "opsctl-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["opsctl.json"])
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for needle in ("core_ingest_queue_depth", "opsctl_scale_desired_replicas", "opsctl_scale_current_replicas",
                   "histogram_quantile(0.95", "histogram_quantile(0.99", 'status=~"5.."', 'result="hit"',
                   "opsctl_restore_drill_success", "opsctl_restore_drill_duration_seconds",
                   "opsctl_backup_last_success_timestamp_seconds", "core_tenant_searches_hour",
                   "core_tenant_cache_hits_hour", "core_tenant_stored_bytes", "opsctl_slow_queries_total"):
        assert needle in exprs, needle
    assert all(t["datasource"]["uid"] == "${datasource}" for p in panels for t in p.get("targets", []))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"


def test_container_commands_parse(built: list[dict[str, Any]]) -> None:
    """`opsctl …` container commands name real commands and options."""
    root = root_command()
    cited = [Citation(o["metadata"]["name"], " ".join(c["command"]), tuple(c["command"][1:]))
             for o in built if o["kind"] == "Deployment" for c in containers(o) if c["command"][0] == "opsctl"]
    assert {c.source for c in cited} == {"core-api", "opsctl-daemon"}
    for citation in cited:
        assert problems(citation, root) == [], citation.line
    worker = containers(one(built, "Deployment", "core-worker"))[0]["command"]
    assert worker[:3] == ["python", "-m", "core.ingest.worker"]
    usage = subprocess.run([sys.executable, "-m", "core.ingest.worker", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 0, usage.stderr
    assert all(flag in usage.stdout for flag in worker[3:] if flag.startswith("--"))


def test_every_container_runs_the_image_make_image_builds_as_its_user(built: list[dict[str, Any]]) -> None:
    """The tag is `make image`'s (opsctl:<version of pyproject.toml>), the pods' user the Dockerfile's,
    and the API pods run the API alone (the opsctl-daemon Deployment is the daemon)."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    (user,) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    deployments = [o for o in built if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["fsGroup"])) == user
        assert [c["image"] for c in containers(deployment)] == [f"opsctl:{version}"]
    api = containers(one(built, "Deployment", "core-api"))[0]["command"]
    assert api[:2] == ["opsctl", "up"] and {"--no-daemon", "--no-prometheus"} <= set(api), api
    assert api[api.index("--workers") + 1] == "0"
