"""The ``local`` scale target: the worker pool of the core's API (``GET|PUT /admin/workers``)."""

from __future__ import annotations

from typing import Any

import httpx

from core.errors import ConfigError, OperationFailed, ServiceUnavailable
from opsctl.scaling.targets import PodStatus, TargetState


class LocalTarget:
    """Reads and resizes the local pool with the admin token; workers are its pods (all ready)."""

    def __init__(self, url: str | None, admin_token: str | None, timeout: float = 30.0) -> None:
        if not url:
            raise ConfigError("local target: no API URL (set target.url, OPSCTL_API_URL, or start `opsctl up`)")
        if not admin_token:
            raise ConfigError("local target: no admin token (set OPSCTL_ADMIN_TOKEN, or start `opsctl up`)")
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self._timeout = timeout

    @property
    def description(self) -> str:
        return f"local {self.url}"

    def _call(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = httpx.request(method, f"{self.url}/admin/workers", json=body, headers=self._headers,
                                     timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"local target: cannot reach {self.url}: {exc}") from exc
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise OperationFailed(f"local target: {method} /admin/workers → {response.status_code}: {message}")
        data: dict[str, Any] = response.json()
        return data

    def read(self) -> TargetState:
        status = self._call("GET")
        pods = tuple(PodStatus(name=f"worker-{w['pid']}", ready=True) for w in status.get("workers", []))
        return TargetState(replicas=int(status["replicas"]), ready_replicas=int(status["running"]), pods=pods)

    def scale(self, replicas: int) -> None:
        self._call("PUT", {"replicas": replicas})

    def check_unmanaged(self) -> None:
        """Nothing else scales the local pool: there is no HPA or ScaledObject to collide with."""
