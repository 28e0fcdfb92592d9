"""The CloudNativePG overlay (manifests/overlays/cloudnativepg): kustomize renders it, kubernetes-validate
accepts its standard objects, its CloudNativePG objects have the fields of the operator's API
(docs/replicas.md cites it), and opsctl is wired to the -rw and -ro services with a logical backup policy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.config import Settings
from opsctl.backup.policy import load_policy
from tests.test_manifests import (
    CRD_KINDS,
    ROOT,
    check_prometheus_rule,
    check_service_monitor,
    containers,
    kustomize,
    one,
)

OVERLAY = ROOT / "manifests" / "overlays" / "cloudnativepg"
CNPG_KINDS = {"Cluster", "ScheduledBackup", "ObjectStore"}
PLUGIN = "barman-cloud.cloudnative-pg.io"

# The fields this overlay may use, from the operator's API reference (postgresql.cnpg.io/v1 ClusterSpec,
# BootstrapInitDB, PluginConfiguration, ScheduledBackupSpec; barmancloud.cnpg.io/v1 ObjectStoreSpec).
CLUSTER_SPEC = {"instances", "imageName", "primaryUpdateStrategy", "storage", "walStorage", "postgresql",
                "bootstrap", "plugins", "resources", "affinity", "monitoring", "enableSuperuserAccess"}
STORAGE = {"size", "storageClass", "resizeInUseVolumes", "pvcTemplate"}
INITDB = {"database", "owner", "secret", "encoding", "localeCollate", "localeCType", "dataChecksums",
          "postInitSQL", "postInitApplicationSQL", "postInitTemplateSQL"}
PLUGIN_CONFIGURATION = {"name", "enabled", "isWALArchiver", "parameters"}
SCHEDULED_BACKUP_SPEC = {"schedule", "cluster", "method", "pluginConfiguration", "backupOwnerReference",
                         "immediate", "suspend", "target", "online"}
OBJECT_STORE_SPEC = {"configuration", "retentionPolicy", "instanceSidecarConfiguration"}
OBJECT_STORE_CONFIGURATION = {"destinationPath", "endpointURL", "endpointCA", "s3Credentials", "googleCredentials",
                              "azureCredentials", "wal", "data", "tags", "historyTags"}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(OVERLAY)


def check_cnpg(obj: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """A CloudNativePG object's structure, field by field, and its references to the others."""
    spec = obj["spec"]
    if obj["kind"] == "Cluster":
        assert obj["apiVersion"] == "postgresql.cnpg.io/v1"
        assert set(spec) <= CLUSTER_SPEC, sorted(set(spec) - CLUSTER_SPEC)
        assert spec["instances"] == 2  # one primary, one streaming replica behind the -ro service
        assert set(spec["storage"]) <= STORAGE and set(spec.get("walStorage", {})) <= STORAGE
        assert set(spec["bootstrap"]) == {"initdb"} and set(spec["bootstrap"]["initdb"]) <= INITDB
        assert any("vector" in s for s in spec["bootstrap"]["initdb"]["postInitApplicationSQL"])
        assert set(spec.get("postgresql", {})) <= {"parameters", "shared_preload_libraries", "pg_hba"}
        assert all(isinstance(v, str) for v in spec["postgresql"]["parameters"].values())  # a map of strings
        archivers = [p for p in spec["plugins"] if p.get("isWALArchiver")]
        assert all(set(p) <= PLUGIN_CONFIGURATION for p in spec["plugins"])
        assert len(archivers) == 1 and archivers[0]["name"] == PLUGIN
        one(objects, "ObjectStore", archivers[0]["parameters"]["barmanObjectName"])
    elif obj["kind"] == "ObjectStore":
        assert obj["apiVersion"] == "barmancloud.cnpg.io/v1"
        assert set(spec) <= OBJECT_STORE_SPEC and re.fullmatch(r"[1-9][0-9]*[dwm]", spec["retentionPolicy"])
        config = spec["configuration"]
        assert set(config) <= OBJECT_STORE_CONFIGURATION and re.match(r"(s3|gs|https)://", config["destinationPath"])
        assert "serverName" not in config  # the plugin's rule: set it on the Cluster's plugin parameters instead
        for ref in config["s3Credentials"].values():
            assert set(ref) == {"name", "key"}
    else:
        assert obj["kind"] == "ScheduledBackup" and obj["apiVersion"] == "postgresql.cnpg.io/v1"
        assert set(spec) <= SCHEDULED_BACKUP_SPEC
        assert len(spec["schedule"].split()) == 6  # seconds first
        assert spec["method"] == "plugin" and spec["pluginConfiguration"]["name"] == PLUGIN
        one(objects, "Cluster", spec["cluster"]["name"])


def test_the_overlay_renders_and_validates(rendered: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    services = [o for o in rendered if o["kind"] == "Service"]
    checked = set()
    for obj in rendered:
        assert obj["metadata"].get("namespace") == "opsctl" or obj["kind"] == "Namespace"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert obj["kind"] in CRD_KINDS | CNPG_KINDS, f"no schema for {obj['kind']}"
            if obj["kind"] == "PrometheusRule":
                check_prometheus_rule(obj)
            elif obj["kind"] == "ServiceMonitor":
                check_service_monitor(obj, services)
            else:
                check_cnpg(obj, rendered)
                checked.add(obj["kind"])
    assert checked == CNPG_KINDS


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "instance"), 2),                                # a misspelt field
    (("spec", "plugins", 0, "isWALArchiver"), False),         # nobody archives WAL
    (("spec", "plugins", 0, "parameters", "barmanObjectName"), "nowhere"),
    (("spec", "instances"), 1),                               # no replica for -ro
])
def test_a_broken_cluster_is_caught(rendered: list[dict[str, Any]], path: tuple[Any, ...], value: Any) -> None:
    broken = json.loads(json.dumps(one(rendered, "Cluster", "opsctl-db")))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(AssertionError):
        check_cnpg(broken, rendered)


def expand(env: list[dict[str, Any]], name: str, values: dict[str, str]) -> str:
    """``name``'s value with ``$(VAR)`` expanded the way the kubelet does: only variables defined earlier."""
    names = [e["name"] for e in env]
    text = str(next(e for e in env if e["name"] == name)["value"])
    for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text):
        assert var in names[:names.index(name)], f"{name} uses $({var}) before it is defined"
        text = text.replace(f"$({var})", values[var])
    return text


def test_opsctl_writes_to_rw_and_searches_read_from_ro(rendered: list[dict[str, Any]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = one(rendered, "Cluster", "opsctl-db")["metadata"]["name"]
    for name in ("core-api", "core-worker", "opsctl-daemon"):
        for container in containers(one(rendered, "Deployment", name)):
            env = {e["name"]: e for e in container["env"]}
            assert env["OPSCTL_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": f"{cluster}-app", "key": "uri"}
    api_env = containers(one(rendered, "Deployment", "core-api"))[0]["env"]
    urls = expand(api_env, "OPSCTL_DATABASE_REPLICA_URLS", {"CNPG_APP_USER": "opsctl", "CNPG_APP_PASSWORD": "pw"})
    monkeypatch.setenv("OPSCTL_DATABASE_REPLICA_URLS", urls)  # the setting parses what the pod gets
    assert Settings().database_replica_urls == [f"postgresql://opsctl:pw@{cluster}-ro:5432/opsctl"]


def test_opsctl_backups_are_logical_and_valid(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    policies = one(rendered, "ConfigMap", "opsctl-policies")["data"]
    path = tmp_path / "backup.yaml"
    path.write_text(policies["backup.yaml"])
    policy = load_policy(path)
    assert policy.mode == "logical" and not policy.from_standby
    assert "point_in_time" not in policy.drill.checks  # a dump restores to its own moment only
    assert yaml.safe_load(policies["autoscaling.yaml"])  # the base's other policies are still there


def test_the_cluster_logs_slow_statements_as_the_overlay_policy_says(rendered: list[dict[str, Any]],
                                                                      tmp_path: Path) -> None:
    """CloudNativePG disables ALTER SYSTEM: the Cluster's parameters are the policy's settings, and
    the policy says so (apply: external), so the daemon's job reports a drift instead of failing."""
    from opsctl.slowqueries.policy import load_policy as load_slow

    path = tmp_path / "slow-queries.yaml"
    path.write_text(one(rendered, "ConfigMap", "opsctl-policies")["data"]["slow-queries.yaml"])
    policy = load_slow(path)
    parameters = one(rendered, "Cluster", "opsctl-db")["spec"]["postgresql"]["parameters"]
    assert policy.apply == "external"
    assert {k: str(parameters.get(k)) for k in policy.settings()} == policy.settings()
