"""Kubernetes scale target: a Deployment's or StatefulSet's ``scale`` subresource.

Talks to the API server with the official ``kubernetes`` client:

* configuration: in-cluster (service account) when running in a pod and no context is named,
  otherwise the kubeconfig (``KUBECONFIG``, else ``~/.kube/config``) with an optional context;
* ``read()``: ``spec.replicas`` and ``status.selector`` from the ``scale`` subresource, the
  workload's ``status.readyReplicas``, and its pods (listed with that selector, page by page);
* ``scale(n)``: a merge patch ``{"spec": {"replicas": n}}`` of the ``scale`` subresource (the
  same request ``kubectl scale`` sends), retried on 409 Conflict;
* ``check_unmanaged()``: refuses a workload that an autoscaling/v2 HorizontalPodAutoscaler or a
  KEDA ScaledObject already targets: two autoscalers on one workload fight each other.

API errors become ``core.errors`` exceptions with one line each: 401/403 → ``ConfigError``
naming the RBAC permission (verb, resource, API group) to grant, 404 → ``NotFound``, connection
failures, timeouts, 429 and 5xx → ``ServiceUnavailable``, anything else → ``OperationFailed``.
Every call carries a timeout. Responses are read as JSON (not as the client's generated models)
so a partial object or a newer field never breaks a read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, NotFound, OperationFailed, OpsError, ServiceUnavailable
from opsctl.scaling.targets import PodStatus, TargetState

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


@dataclass(frozen=True)
class _Kind:
    name: str  # Deployment | StatefulSet
    resource: str  # the plural resource of the apps group (for RBAC messages)
    method: str  # the suffix of the client's method names


_KINDS = {
    "deployment": _Kind("Deployment", "deployments", "deployment"),
    "statefulset": _Kind("StatefulSet", "statefulsets", "stateful_set"),
}

KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)  # (connect, read) seconds, on every call
PAGE_SIZE = 500  # items per list request; the rest follows with continue tokens
CONNECT_RETRIES = 2  # re-tries of a refused connection (never of a request the server may have read)
CONFLICT_ATTEMPTS = 3  # tries of the scale PATCH when the server answers 409 Conflict
CONFLICT_BACKOFF = 0.2  # seconds, doubled after each conflict


def load_api_client(context: str | None = None) -> ApiClient:
    """An ``ApiClient`` for the cluster this process should talk to.

    In a pod (``KUBERNETES_SERVICE_HOST`` set) and without a named context: the pod's service
    account. Otherwise the kubeconfig named by ``KUBECONFIG`` (``:``-separated files are merged)
    or ``~/.kube/config``, using ``context`` or the file's current context.
    """
    from kubernetes import client, config
    from urllib3.util.retry import Retry

    configuration = client.Configuration()
    # retry refused connections (an API server or load balancer blip) but never a read: a request
    # the server may have received is not re-sent, and a slow server fails within one timeout
    configuration.retries = Retry(total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=0, redirect=0, status=0)
    if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise ConfigError(f"Kubernetes in-cluster config: {_one_line(exc)}") from exc
        return client.ApiClient(configuration)

    path = os.environ.get("KUBECONFIG") or "~/.kube/config"
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if not any(os.path.isfile(f) for f in files):
        raise ConfigError(
            f"Kubernetes config: no kubeconfig at {path} and not running in a pod "
            "(set KUBECONFIG or run inside the cluster)"
        )
    where = f"kubeconfig {path}" + (f" context {context!r}" if context else "")
    try:
        config.load_kube_config(
            config_file=path, context=context, client_configuration=configuration, persist_config=False
        )
    except Exception as exc:  # the loader raises ConfigException, YAML, OS and type errors alike
        raise ConfigError(f"Kubernetes config: {where}: {_one_line(exc)}") from exc
    return client.ApiClient(configuration)


class KubernetesTarget:
    """A Deployment or StatefulSet, scaled through its ``scale`` subresource."""

    def __init__(
        self,
        kind: str,
        name: str,
        namespace: str,
        context: str | None = None,
        api_client: ApiClient | None = None,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        spec = _KINDS.get(kind.lower())
        if spec is None:
            raise ConfigError(f"Kubernetes target kind {kind!r}: expected Deployment or StatefulSet")
        if not name or not namespace:
            raise ConfigError(f"Kubernetes target {kind}: name and namespace are required")
        self.kind = spec.name
        self.name = name
        self.namespace = namespace
        self.context = context
        self.timeout = timeout
        self._spec = spec
        self._client = api_client

    @property
    def description(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def __repr__(self) -> str:
        return f"KubernetesTarget({self.description!r}, context={self.context!r})"

    # --- the ScaleTarget contract -------------------------------------------------------------

    def read(self) -> TargetState:
        scale = self._get(
            getattr(self._apps(), f"read_namespaced_{self._spec.method}_scale"),
            "get",
            f"{self._spec.resource}/scale",
            "apps",
            self.name,
            self.namespace,
        )
        workload = self._get(
            getattr(self._apps(), f"read_namespaced_{self._spec.method}"),
            "get",
            self._spec.resource,
            "apps",
            self.name,
            self.namespace,
        )
        replicas = int(scale.get("spec", {}).get("replicas") or 0)
        ready = int(workload.get("status", {}).get("readyReplicas") or 0)
        selector = scale.get("status", {}).get("selector") or None
        pods: tuple[PodStatus, ...] = ()
        if selector:  # an empty selector would list every pod of the namespace
            core = self._core()
            items = self._list(core.list_namespaced_pod, "pods", "", self.namespace, label_selector=selector)
            pods = tuple(sorted((_pod_status(p) for p in items), key=lambda p: p.name))
        return TargetState(replicas=replicas, ready_replicas=ready, pods=pods, selector=selector)

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise ConfigError(f"{self.description}: replicas must be >= 0, got {replicas}")
        patch = getattr(self._apps(), f"patch_namespaced_{self._spec.method}_scale")
        body = {"spec": {"replicas": replicas}}
        delay = CONFLICT_BACKOFF
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self._call(
                    patch,
                    "patch",
                    f"{self._spec.resource}/scale",
                    "apps",
                    self.name,
                    self.namespace,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,  # the answer is not needed: skip building a model from it
                )
                return
            except _Conflict as exc:
                if attempt == CONFLICT_ATTEMPTS:
                    raise OperationFailed(
                        f"{self.description}: scale to {replicas} conflicted {attempt} times: {exc.message}"
                    ) from exc
                time.sleep(delay)
                delay *= 2

    def check_unmanaged(self) -> None:
        from kubernetes import client

        autoscaling = client.AutoscalingV2Api(self._api_client())
        for hpa in self._list(
            autoscaling.list_namespaced_horizontal_pod_autoscaler,
            "horizontalpodautoscalers",
            "autoscaling",
            self.namespace,
        ):
            ref = hpa.get("spec", {}).get("scaleTargetRef", {})
            if ref.get("kind") == self.kind and ref.get("name") == self.name:
                self._refuse("HorizontalPodAutoscaler", hpa)

        custom = client.CustomObjectsApi(self._api_client())
        try:
            scaled_objects = self._list(
                custom.list_namespaced_custom_object,
                KEDA_PLURAL,
                KEDA_GROUP,
                KEDA_GROUP,
                KEDA_VERSION,
                self.namespace,
                KEDA_PLURAL,
            )
        except NotFound:  # the KEDA CRD is not installed: there are no ScaledObjects
            return
        for so in scaled_objects:
            ref = so.get("spec", {}).get("scaleTargetRef", {})
            if (ref.get("kind") or "Deployment") == self.kind and ref.get("name") == self.name:
                self._refuse("KEDA ScaledObject", so)

    # --- plumbing -----------------------------------------------------------------------------

    def _refuse(self, what: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        raise OperationFailed(
            f"{self.description} is already scaled by {what} "
            f"{meta.get('namespace', self.namespace)}/{meta.get('name', '?')}; "
            "refusing to fight it (remove it, or pass --force)"
        )

    def _api_client(self) -> ApiClient:
        if self._client is None:
            self._client = load_api_client(self.context)
        return self._client

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self._api_client())

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self._api_client())

    def _get(self, method: Callable[..., Any], verb: str, resource: str, group: str, *args: Any) -> dict[str, Any]:
        return _json(self._call(method, verb, resource, group, *args, _preload_content=False))

    def _list(
        self, method: Callable[..., Any], resource: str, group: str, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Every item of a list call, following ``metadata.continue`` page by page."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._get_page(method, resource, group, args, kwargs, token)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return items

    def _get_page(
        self,
        method: Callable[..., Any],
        resource: str,
        group: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        token: str | None,
    ) -> dict[str, Any]:
        extra = {"_continue": token} if token else {}
        response = self._call(
            method, "list", resource, group, *args, limit=PAGE_SIZE, _preload_content=False, **kwargs, **extra
        )
        return _json(response)

    def _call(self, method: Callable[..., Any], verb: str, resource: str, group: str, *args: Any, **kwargs: Any) -> Any:
        """Run one API call with a timeout; map its failure to a one-line ``core.errors`` exception."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            raise self._api_error(exc, verb, resource, group) from exc
        except (HTTPError, OSError) as exc:
            host = self._api_client().configuration.host
            raise ServiceUnavailable(f"Kubernetes API {host} unreachable: {_one_line(exc)}") from exc

    def _api_error(self, exc: Any, verb: str, resource: str, group: str) -> OpsError:
        status = int(exc.status or 0)
        message = _status_message(exc)
        grant = f"verb {verb!r} on {resource!r}" + (f" (API group {group!r})" if group else " (core API group)")
        scope = f"in namespace {self.namespace}"
        if status == 401:
            who = f"context {self.context!r}" if self.context else "the configured credentials"
            return ConfigError(
                f"Kubernetes API: unauthenticated (401) for {verb} {resource} {scope}: check the token of {who}"
            )
        if status == 403:
            return ConfigError(
                f"Kubernetes RBAC: forbidden to {verb} {resource} {scope}; grant {grant} "
                f"(see docs/kubernetes.md){': ' + message if message else ''}"
            )
        if status == 404:
            if resource in (self._spec.resource, f"{self._spec.resource}/scale"):
                return NotFound(f"{self.description} not found")
            return NotFound(f"Kubernetes {resource} {scope}: not found{': ' + message if message else ''}")
        if status == 409:
            return _Conflict(message or "conflict")
        if status == 429 or status >= 500:
            return ServiceUnavailable(f"Kubernetes API: {verb} {resource} {scope}: {status} {message or exc.reason}")
        return OperationFailed(f"Kubernetes API: {verb} {resource} {scope}: {status} {message or exc.reason}")


class _Conflict(OperationFailed):
    """409 Conflict (retried by ``scale``)."""


def _json(response: Any) -> dict[str, Any]:
    data = response.data
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ServiceUnavailable(f"Kubernetes API: response is not JSON: {data[:80]!r}") from exc
    if not isinstance(value, dict):
        raise ServiceUnavailable(f"Kubernetes API: expected a JSON object, got {type(value).__name__}")
    return value


def _status_message(exc: Any) -> str:
    """The ``message`` of the API server's ``Status`` body, when there is one."""
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return ""
    return _one_line(body.get("message", "")) if isinstance(body, dict) else ""


def _pod_status(pod: dict[str, Any]) -> PodStatus:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodStatus(
        name=meta.get("name", ""),
        ready=ready,
        phase=status.get("phase") or "Unknown",
        started_at=_timestamp(status.get("startTime")),
        deleting=meta.get("deletionTimestamp") is not None,
    )


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())
