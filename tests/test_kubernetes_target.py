"""The Kubernetes scale target, driven by the real ``kubernetes`` client.

No API server can run on these machines, so a small HTTP server in a thread implements exactly
the endpoints the target calls (apps/v1 Deployments and StatefulSets and their ``scale``
subresource, core/v1 pods, autoscaling/v2 HPAs, keda.sh ScaledObjects) and records every call.
The client reaches it through a generated kubeconfig with a context and a bearer token.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from core.errors import ConfigError, NotFound, OperationFailed, ServiceUnavailable
from opsctl.scaling import kubernetes as k8s
from opsctl.scaling.kubernetes import KubernetesTarget, load_api_client
from opsctl.scaling.targets import PodStatus

TOKEN = "test-token-prod"
STARTED = "2026-11-22T11:00:00Z"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str | None
    authorization: str | None


@dataclass
class Workload:
    replicas: int
    ready: int
    labels: dict[str, str]


@dataclass
class FakeCluster:
    """The state the fake API server serves, and the calls it received."""

    token: str
    workloads: dict[tuple[str, str, str], Workload] = field(default_factory=dict)  # (resource, ns, name)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ns → pod objects
    hpas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scaled_objects: dict[str, list[dict[str, Any]]] | None = None  # None: the KEDA CRD is not installed
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource) answered 403
    conflicts: int = 0  # the next N scale PATCHes answer 409
    max_page: int | None = None  # cap on list page size, to force continue tokens
    delay: float = 0.0  # seconds to wait before answering
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def patches(self) -> list[Call]:
        return [c for c in self.calls if c.method == "PATCH"]


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        cluster = self.server.cluster
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with cluster.lock:
            cluster.calls.append(
                Call(
                    self.command,
                    url.path,
                    query,
                    body,
                    self.headers.get("Content-Type"),
                    self.headers.get("Authorization"),
                )
            )
        if cluster.delay:
            time.sleep(cluster.delay)
        if self.headers.get("Authorization") != f"Bearer {cluster.token}":
            return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
        code, payload = self._route(cluster, self.command, url.path.strip("/").split("/"), query, body)
        self._send(code, payload)

    def _route(
        self, cluster: FakeCluster, method: str, parts: list[str], query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        # /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}[/scale]
        if parts[:3] == ["apis", "apps", "v1"] and len(parts) in (7, 8) and parts[3] == "namespaces":
            ns, resource, name = parts[4], parts[5], parts[6]
            sub = "/scale" if len(parts) == 8 else ""
            verb = "patch" if method == "PATCH" else "get"
            if (verb, resource + sub) in cluster.forbidden:
                return 403, _status(
                    403,
                    "Forbidden",
                    f'{resource}.apps "{name}" is forbidden: User '
                    f'"system:serviceaccount:ops:opsctl" cannot {verb} resource "{resource}{sub}" '
                    f'in API group "apps" in the namespace "{ns}"',
                )
            wl = cluster.workloads.get((resource, ns, name))
            if wl is None:
                return 404, _status(404, "NotFound", f'{resource}.apps "{name}" not found')
            if sub and method == "PATCH":
                if self.headers.get("Content-Type") not in (
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                ):
                    return 415, _status(415, "UnsupportedMediaType", "unsupported patch type")
                if cluster.conflicts:
                    cluster.conflicts -= 1
                    return 409, _status(409, "Conflict", "Operation cannot be fulfilled: the object has been modified")
                wl.replicas = int(body["spec"]["replicas"])
            selector = ",".join(f"{k}={v}" for k, v in sorted(wl.labels.items()))
            meta = {"name": name, "namespace": ns, "resourceVersion": "1"}
            if sub:
                return 200, {
                    "kind": "Scale",
                    "apiVersion": "autoscaling/v1",
                    "metadata": meta,
                    "spec": {"replicas": wl.replicas},
                    "status": {"replicas": wl.replicas, "selector": selector},
                }
            kind = "Deployment" if resource == "deployments" else "StatefulSet"
            status = {"replicas": wl.replicas}
            if wl.ready:  # omitempty, like the real API server
                status["readyReplicas"] = wl.ready
            return 200, {
                "kind": kind,
                "apiVersion": "apps/v1",
                "metadata": meta,
                "spec": {"replicas": wl.replicas, "selector": {"matchLabels": wl.labels}},
                "status": status,
            }
        # /api/v1/namespaces/{ns}/pods
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 5 and parts[4] == "pods":
            if ("list", "pods") in cluster.forbidden:
                return 403, _status(403, "Forbidden", 'pods is forbidden: cannot list resource "pods"')
            items = [
                p
                for p in cluster.pods.get(parts[3], [])
                if _matches(query.get("labelSelector"), p["metadata"].get("labels", {}))
            ]
            return 200, self._page("PodList", "v1", items, query, cluster.max_page)
        # /apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers
        if parts[:4] == ["apis", "autoscaling", "v2", "namespaces"] and parts[5:] == ["horizontalpodautoscalers"]:
            if ("list", "horizontalpodautoscalers") in cluster.forbidden:
                return 403, _status(403, "Forbidden", "horizontalpodautoscalers.autoscaling is forbidden")
            return 200, self._page(
                "HorizontalPodAutoscalerList", "autoscaling/v2", cluster.hpas.get(parts[4], []), query, cluster.max_page
            )
        # /apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects
        if parts[:4] == ["apis", "keda.sh", "v1alpha1", "namespaces"] and parts[5:] == ["scaledobjects"]:
            if cluster.scaled_objects is None:
                return 404, _status(404, "NotFound", "the server could not find the requested resource")
            return 200, self._page(
                "ScaledObjectList",
                "keda.sh/v1alpha1",
                cluster.scaled_objects.get(parts[4], []),
                query,
                cluster.max_page,
            )
        return 404, _status(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _page(
        kind: str, api_version: str, items: list[dict[str, Any]], query: dict[str, str], max_page: int | None
    ) -> dict[str, Any]:
        start = int(query.get("continue") or 0)
        size = int(query.get("limit") or len(items) or 1)
        if max_page:
            size = min(size, max_page)
        end = start + size
        meta: dict[str, Any] = {"resourceVersion": "7"}
        if end < len(items):
            meta["continue"] = str(end)
        return {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items[start:end]}

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cluster = cluster

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out closed its socket before the (delayed) answer: expected, not noise
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _serve(cluster: FakeCluster) -> Iterator[_Server]:
    server = _Server(cluster)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def pod(
    name: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    labels: dict[str, str] | None = None,
    started: str | None = STARTED,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": labels or {"app": "core-worker"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T11:59:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
        ],
    }
    if started:
        status["startTime"] = started
    return {"metadata": meta, "spec": {"containers": [{"name": "worker", "image": "core"}]}, "status": status}


def hpa(name: str, kind: str, target: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    }


def scaled_object(name: str, target: str, kind: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": target}
    if kind:
        ref["kind"] = kind
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"scaleTargetRef": ref},
    }


@pytest.fixture
def cluster() -> FakeCluster:
    c = FakeCluster(token=TOKEN)
    c.workloads[("deployments", "default", "core-worker")] = Workload(3, 2, {"app": "core-worker"})
    c.workloads[("statefulsets", "default", "core-db")] = Workload(2, 2, {"app": "core-db"})
    c.pods["default"] = [
        pod("core-worker-a"),
        pod("core-worker-b", ready=False),
        pod("core-worker-c", ready=False, phase="Pending", started=None),
        pod("core-worker-d", ready=False, phase="Failed"),
        pod("core-worker-e", deleting=True),
        pod("core-db-0", labels={"app": "core-db"}),
        pod("core-db-1", labels={"app": "core-db"}),
        pod("other-x", labels={"app": "other"}),
    ]
    return c


@pytest.fixture
def apiserver(cluster: FakeCluster) -> Iterator[_Server]:
    yield from _serve(cluster)


@pytest.fixture
def decoy() -> Iterator[_Server]:
    """A second cluster, the kubeconfig's current context: reaching it means the context was ignored."""
    c = FakeCluster(token="test-token-decoy")
    c.workloads[("deployments", "default", "core-worker")] = Workload(9, 9, {"app": "core-worker"})
    yield from _serve(c)


@pytest.fixture
def kubeconfig(tmp_path: Path, apiserver: _Server, decoy: _Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "decoy",
                "clusters": [
                    {"name": "prod", "cluster": {"server": apiserver.url}},
                    {"name": "decoy", "cluster": {"server": decoy.url}},
                ],
                "users": [
                    {"name": "opsctl", "user": {"token": TOKEN}},
                    {"name": "decoy", "user": {"token": "test-token-decoy"}},
                ],
                "contexts": [
                    {"name": "prod", "context": {"cluster": "prod", "user": "opsctl", "namespace": "default"}},
                    {"name": "decoy", "context": {"cluster": "decoy", "user": "decoy"}},
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def deployment(**kwargs: Any) -> KubernetesTarget:
    return KubernetesTarget("Deployment", "core-worker", "default", context="prod", **kwargs)


# --- read ---------------------------------------------------------------------------------------


def test_read_reports_replicas_readiness_and_every_kind_of_pod(kubeconfig: Path, cluster: FakeCluster) -> None:
    state = deployment().read()
    assert state.replicas == 3
    assert state.ready_replicas == 2
    assert state.selector == "app=core-worker"
    started = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    assert state.pods == (
        PodStatus("core-worker-a", ready=True, phase="Running", started_at=started),
        PodStatus("core-worker-b", ready=False, phase="Running", started_at=started),
        PodStatus("core-worker-c", ready=False, phase="Pending", started_at=None),
        PodStatus("core-worker-d", ready=False, phase="Failed", started_at=started),
        PodStatus("core-worker-e", ready=True, phase="Running", started_at=started, deleting=True),
    )
    paths = [(c.method, c.path) for c in cluster.calls]
    assert paths == [
        ("GET", "/apis/apps/v1/namespaces/default/deployments/core-worker/scale"),
        ("GET", "/apis/apps/v1/namespaces/default/deployments/core-worker"),
        ("GET", "/api/v1/namespaces/default/pods"),
    ]
    assert cluster.calls[2].query["labelSelector"] == "app=core-worker"
    assert all(c.authorization == f"Bearer {TOKEN}" for c in cluster.calls)
    assert not cluster.patches()


def test_statefulset_uses_its_own_endpoints(kubeconfig: Path, cluster: FakeCluster) -> None:
    target = KubernetesTarget("StatefulSet", "core-db", "default", context="prod")
    assert target.description == "StatefulSet default/core-db"
    state = target.read()
    assert (state.replicas, state.ready_replicas) == (2, 2)
    assert [p.name for p in state.pods] == ["core-db-0", "core-db-1"]
    target.scale(5)
    assert [(c.method, c.path) for c in cluster.calls] == [
        ("GET", "/apis/apps/v1/namespaces/default/statefulsets/core-db/scale"),
        ("GET", "/apis/apps/v1/namespaces/default/statefulsets/core-db"),
        ("GET", "/api/v1/namespaces/default/pods"),
        ("PATCH", "/apis/apps/v1/namespaces/default/statefulsets/core-db/scale"),
    ]
    assert cluster.workloads[("statefulsets", "default", "core-db")].replicas == 5


def test_missing_ready_replicas_means_zero_ready(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.workloads[("deployments", "default", "core-worker")].ready = 0
    cluster.pods["default"] = []
    state = deployment().read()
    assert (state.replicas, state.ready_replicas, state.pods) == (3, 0, ())


def test_pod_list_follows_continue_tokens(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.max_page = 2
    state = deployment().read()
    assert [p.name for p in state.pods] == [f"core-worker-{x}" for x in "abcde"]
    pod_calls = [c for c in cluster.calls if c.path.endswith("/pods")]
    assert [c.query.get("continue") for c in pod_calls] == [None, "2", "4"]
    assert all(c.query["labelSelector"] == "app=core-worker" for c in pod_calls)
    assert all(c.query["limit"] == str(k8s.PAGE_SIZE) for c in pod_calls)


# --- scale --------------------------------------------------------------------------------------


def test_scale_sends_one_merge_patch_of_the_scale_subresource(kubeconfig: Path, cluster: FakeCluster) -> None:
    deployment().scale(7)
    (patch,) = cluster.patches()
    assert patch.path == "/apis/apps/v1/namespaces/default/deployments/core-worker/scale"
    assert patch.body == {"spec": {"replicas": 7}}
    assert patch.content_type == "application/merge-patch+json"
    assert patch.authorization == f"Bearer {TOKEN}"
    assert cluster.workloads[("deployments", "default", "core-worker")].replicas == 7
    assert deployment().read().replicas == 7


def test_scale_retries_a_conflict(kubeconfig: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k8s, "CONFLICT_BACKOFF", 0.01)
    cluster.conflicts = 2
    deployment().scale(4)
    assert [c.body for c in cluster.patches()] == [{"spec": {"replicas": 4}}] * 3
    assert cluster.workloads[("deployments", "default", "core-worker")].replicas == 4


def test_scale_gives_up_after_repeated_conflicts(
    kubeconfig: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s, "CONFLICT_BACKOFF", 0.01)
    cluster.conflicts = 10
    with pytest.raises(OperationFailed, match=r"Deployment default/core-worker: scale to 4 conflicted 3 times"):
        deployment().scale(4)
    assert len(cluster.patches()) == k8s.CONFLICT_ATTEMPTS
    assert cluster.workloads[("deployments", "default", "core-worker")].replicas == 3


def test_negative_replicas_are_refused_before_any_call(kubeconfig: Path, cluster: FakeCluster) -> None:
    with pytest.raises(ConfigError, match="replicas must be >= 0"):
        deployment().scale(-1)
    assert cluster.calls == []


# --- another autoscaler owns the workload ---------------------------------------------------------


def test_unmanaged_workload_passes_when_keda_is_not_installed(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.hpas["default"] = [hpa("other", "Deployment", "api"), hpa("db", "StatefulSet", "core-worker")]
    deployment().check_unmanaged()
    assert [c.path for c in cluster.calls] == [
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
        "/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects",
    ]


def test_refuses_a_workload_an_hpa_targets(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.hpas["default"] = [hpa("other", "Deployment", "api"), hpa("worker-hpa", "Deployment", "core-worker")]
    target = deployment()
    with pytest.raises(OperationFailed) as err:
        target.check_unmanaged()
    assert str(err.value) == (
        "Deployment default/core-worker is already scaled by HorizontalPodAutoscaler default/worker-hpa; "
        "refusing to fight it (remove it, or pass --force)"
    )
    assert not cluster.patches()


def test_refuses_a_workload_a_scaled_object_targets(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.scaled_objects = {"default": [scaled_object("api-so", "api"), scaled_object("worker-so", "core-worker")]}
    with pytest.raises(OperationFailed, match=r"already scaled by KEDA ScaledObject default/worker-so;"):
        deployment().check_unmanaged()
    assert not cluster.patches()


def test_scaled_object_kind_must_match(kubeconfig: Path, cluster: FakeCluster) -> None:
    # kind omitted means Deployment: it does not target the StatefulSet of the same name
    cluster.workloads[("statefulsets", "default", "core-worker")] = Workload(1, 1, {"app": "core-worker"})
    cluster.scaled_objects = {"default": [scaled_object("worker-so", "core-worker")]}
    KubernetesTarget("StatefulSet", "core-worker", "default", context="prod").check_unmanaged()
    cluster.scaled_objects = {"default": [scaled_object("sts-so", "core-worker", kind="StatefulSet")]}
    with pytest.raises(OperationFailed, match="ScaledObject default/sts-so"):
        KubernetesTarget("StatefulSet", "core-worker", "default", context="prod").check_unmanaged()


def test_hpa_list_follows_continue_tokens(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.max_page = 1
    cluster.hpas["default"] = [
        hpa("a", "Deployment", "api"),
        hpa("b", "Deployment", "x"),
        hpa("c", "Deployment", "core-worker"),
    ]
    with pytest.raises(OperationFailed, match="HorizontalPodAutoscaler default/c"):
        deployment().check_unmanaged()
    assert len([c for c in cluster.calls if "horizontalpodautoscalers" in c.path]) == 3


# --- errors -------------------------------------------------------------------------------------


def test_forbidden_patch_names_the_missing_permission(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.forbidden.add(("patch", "deployments/scale"))
    with pytest.raises(ConfigError) as err:
        deployment().scale(5)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "Kubernetes RBAC: forbidden to patch deployments/scale in namespace default; "
        "grant verb 'patch' on 'deployments/scale' (API group 'apps')"
    )
    assert 'User "system:serviceaccount:ops:opsctl"' in message
    assert cluster.workloads[("deployments", "default", "core-worker")].replicas == 3


@pytest.mark.parametrize(
    ("forbidden", "action", "expected"),
    [
        (("list", "pods"), "read", r"forbidden to list pods in namespace default; grant verb 'list' on 'pods' \(core"),
        (("get", "deployments"), "read", r"grant verb 'get' on 'deployments' \(API group 'apps'\)"),
        (("list", "horizontalpodautoscalers"), "check_unmanaged", r"'horizontalpodautoscalers' \(API group 'autos"),
    ],
)
def test_forbidden_calls_name_their_permission(
    kubeconfig: Path, cluster: FakeCluster, forbidden: tuple[str, str], action: str, expected: str
) -> None:
    cluster.forbidden.add(forbidden)
    with pytest.raises(ConfigError, match=expected):
        getattr(deployment(), action)()


def test_missing_workload_is_not_found(kubeconfig: Path) -> None:
    with pytest.raises(NotFound) as err:
        KubernetesTarget("Deployment", "ghost", "default", context="prod").read()
    assert str(err.value) == "Deployment default/ghost not found"
    with pytest.raises(NotFound, match=r"^StatefulSet default/ghost not found$"):
        KubernetesTarget("StatefulSet", "ghost", "default", context="prod").scale(1)


def test_wrong_token_is_a_config_error(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.token = "rotated"
    with pytest.raises(ConfigError, match=r"unauthenticated \(401\) .* check the token of context 'prod'"):
        deployment().read()


def test_unreachable_api_server_is_service_unavailable(kubeconfig: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    target = deployment(api_client=client.ApiClient(configuration))
    with pytest.raises(ServiceUnavailable, match=rf"^Kubernetes API http://127.0.0.1:{port} unreachable: "):
        target.read()


def test_every_call_has_a_timeout(kubeconfig: Path, cluster: FakeCluster) -> None:
    cluster.delay = 1.0
    target = deployment(timeout=(1.0, 0.2))
    with pytest.raises(ServiceUnavailable, match=r"unreachable: .*[Rr]ead timed out"):
        target.read()
    assert len(cluster.calls) == 1  # a request the server may have read is never re-sent
    with pytest.raises(ServiceUnavailable, match=r"[Rr]ead timed out"):
        target.scale(4)
    with pytest.raises(ServiceUnavailable, match=r"[Rr]ead timed out"):
        target.check_unmanaged()


# --- configuration ------------------------------------------------------------------------------


def test_context_selects_the_cluster(kubeconfig: Path, cluster: FakeCluster, decoy: _Server) -> None:
    assert deployment().read().replicas == 3
    assert decoy.cluster.calls == []
    # without a context the kubeconfig's current context (the decoy cluster) is used
    assert KubernetesTarget("Deployment", "core-worker", "default").read().replicas == 9
    assert [c.authorization for c in decoy.cluster.calls] == ["Bearer test-token-decoy"] * 3
    assert len(cluster.calls) == 3


def test_unknown_context_is_one_config_line(kubeconfig: Path) -> None:
    with pytest.raises(ConfigError) as err:
        KubernetesTarget("Deployment", "core-worker", "default", context="nope").read()
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"Kubernetes config: kubeconfig {kubeconfig} context 'nope': ")


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match=r"no kubeconfig at .*absent and not running in a pod"):
        load_api_client()


def test_invalid_kubeconfig_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [this is: not valid\n")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError) as err:
        load_api_client()
    assert str(err.value).startswith(f"Kubernetes config: kubeconfig {path}: ")
    assert "\n" not in str(err.value)


def test_in_cluster_without_a_service_account_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match=r"^Kubernetes in-cluster config: "):
        load_api_client()


def test_a_named_context_wins_over_in_cluster(
    kubeconfig: Path, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert deployment().read().replicas == 3
    assert cluster.calls


@pytest.mark.parametrize("kind", ["ReplicaSet", "job", ""])
def test_unsupported_kind_is_a_config_error(kind: str) -> None:
    with pytest.raises(ConfigError, match="expected Deployment or StatefulSet"):
        KubernetesTarget(kind, "x", "default")


def test_description_and_kind_spelling() -> None:
    target = KubernetesTarget("statefulset", "core-db", "prod")
    assert target.kind == "StatefulSet"
    assert target.description == "StatefulSet prod/core-db"


# --- the documented RBAC Role -------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "kubernetes.md"


def _documented_role() -> dict[str, Any]:
    text = DOC.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d and d.get("kind") == "Role"]
    assert len(docs) == 1, "docs/kubernetes.md must show exactly one Role"
    return docs[0]


def _rbac_request(call: Call) -> tuple[str, str, str]:
    """(API group, resource[/subresource], verb) that the API server authorizes for a recorded call."""
    parts = call.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    assert rest[0] == "namespaces"
    resource, tail = rest[2], rest[3:]
    if len(tail) == 2:
        resource += "/" + tail[1]
    verb = {"PATCH": "patch", "PUT": "update"}.get(call.method) or ("get" if tail else "list")
    return group, resource, verb


def _allowed(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", []) and resource in rule.get("resources", []) and verb in rule["verbs"]
        for rule in role["rules"]
    )


def test_documented_role_is_valid_and_grants_every_call(kubeconfig: Path, cluster: FakeCluster) -> None:
    import kubernetes_validate

    role = _documented_role()
    kubernetes_validate.validate(role, "1.30.0", strict=True)
    cluster.scaled_objects = {"default": []}
    for target in (deployment(), KubernetesTarget("StatefulSet", "core-db", "default", context="prod")):
        target.read()
        target.check_unmanaged()
        target.scale(2)
    requests = {_rbac_request(c) for c in cluster.calls}
    assert requests == {
        ("apps", "deployments", "get"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("apps", "statefulsets", "get"),
        ("apps", "statefulsets/scale", "get"),
        ("apps", "statefulsets/scale", "patch"),
        ("", "pods", "list"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("keda.sh", "scaledobjects", "list"),
    }
    assert [r for r in sorted(requests) if not _allowed(role, *r)] == []
    # and the Role grants nothing that writes anything but the scale subresource
    writes = {
        (g, r)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        if set(rule["verbs"]) & {"create", "update", "patch", "delete", "deletecollection"}
    }
    assert writes == {("apps", "deployments/scale"), ("apps", "statefulsets/scale")}


def test_importing_the_target_does_not_import_the_client() -> None:
    # policies naming a Kubernetes target must not slow down every opsctl command
    code = "import sys, opsctl.scaling.kubernetes; print('kubernetes' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DOC.parent.parent
    )
    assert out.stdout.strip() == "False"


# --- the whole path: `opsctl scale --apply` → Prometheus → decision → PATCH --------------------

K8S_POLICY = """
prometheus: {{url: "{prom}", timeoutSeconds: 5}}
services:
  core-worker:
    target: {{kind: Deployment, name: core-worker, namespace: default, context: prod}}
    minReplicas: 1
    maxReplicas: 10
    metrics:
      - name: backlog
        query: vector(450)
        target: {{type: AverageValue, averageValue: 100}}
"""


@pytest.fixture
def prometheus() -> Iterator[Any]:
    from core.embedded import EmbeddedPrometheus, prometheus_binary
    from tests.conftest import free_port, outside_pytest_tmp

    assert prometheus_binary(), "Prometheus must be installed (make test installs it): this test never skips"
    prom = EmbeddedPrometheus(outside_pytest_tmp("opsctl-test-k8s-prom-"), "127.0.0.1:9", port=free_port())
    prom.start()
    yield prom
    prom.stop()


def test_scale_apply_patches_the_deployment_and_refuses_one_an_hpa_owns(
        kubeconfig: Path, cluster: FakeCluster, prometheus: Any, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.cli import main

    policy = tmp_path / "autoscaling.yaml"
    policy.write_text(K8S_POLICY.format(prom=prometheus.url))
    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)

    def scale(*args: str) -> tuple[int, Any]:
        code = main(["scale", "core-worker", "--policy", str(policy), "-o", "json", *args])
        out = capsys.readouterr().out
        return code, json.loads(out) if out.strip() else None

    # a dry run reads the Deployment and Prometheus, decides, and patches nothing
    code, dry = scale()
    assert code == 0 and dry["current_replicas"] == 3 and dry["desired_replicas"] == 5 and not cluster.patches()
    # the HPA's AverageValue math: 450 in total over a target of 100 per replica → ceil(4.5) = 5
    assert [m["value"] for m in dry["metrics"]] == [450]

    cluster.hpas["default"] = [hpa("worker-hpa", "Deployment", "core-worker")]
    code, refused = scale("--apply")
    assert code == 1 and not cluster.patches()
    assert "HorizontalPodAutoscaler default/worker-hpa" in json.dumps(refused)

    code, forced = scale("--apply", "--force")
    assert code == 0 and forced["applied"] is True
    (patch,) = cluster.patches()
    assert patch.path == "/apis/apps/v1/namespaces/default/deployments/core-worker/scale"
    assert patch.body == {"spec": {"replicas": 5}}
