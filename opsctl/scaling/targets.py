"""What the autoscaler scales: the contract every scale target implements.

A target reports its replicas and pods (for the replica calculator's treatment of unready,
pending, failed and missing-metric pods) and sets its replica count. Adapters:
``opsctl.scaling.local`` (the core's own worker pool, ``/admin/workers``) and
``opsctl.scaling.kubernetes`` (a Deployment or StatefulSet's ``scale`` subresource).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PodStatus:
    name: str
    ready: bool
    phase: str = "Running"  # Pending | Running | Succeeded | Failed | Unknown
    started_at: datetime | None = None
    deleting: bool = False  # has a deletionTimestamp


@dataclass(frozen=True)
class TargetState:
    replicas: int  # the replica count currently set (spec.replicas)
    ready_replicas: int
    pods: tuple[PodStatus, ...] = field(default=())
    selector: str | None = None  # label selector of the pods, when the target has one


class ScaleTarget(Protocol):
    @property
    def description(self) -> str:
        """Human name, e.g. ``Deployment default/core-worker`` or ``local http://127.0.0.1:8080``."""
        ...

    def read(self) -> TargetState:
        """Current replicas, readiness and pods; raises ``core.errors`` exceptions."""
        ...

    def scale(self, replicas: int) -> None:
        """Set the replica count; raises ``core.errors`` exceptions."""
        ...

    def check_unmanaged(self) -> None:
        """Raise ``OperationFailed`` if another autoscaler (an HPA, a KEDA ScaledObject) targets it."""
        ...
