"""The autoscaling control loop, one cycle: policy → target → metrics → snapshot → decide → audit → apply.

Every live decision (dry run or not) is stored as ``scale.decide`` with the snapshot it was made
from, the decision and whether it was applied — an applied change in ``ops_events``, any other in
``ops_decisions`` (:mod:`opsctl.audit`) — so ``opsctl scale explain`` can replay it. Applying
refuses a target that another autoscaler manages unless ``force``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from core.errors import ConfigError, NotFound, OperationFailed, OpsError
from opsctl.scaling import snapshot as snapshots
from opsctl.scaling.engine import Decision, decide
from opsctl.scaling.policy import AutoscalingPolicy, ServicePolicy, Target
from opsctl.scaling.snapshot import Snapshot
from opsctl.scaling.targets import ScaleTarget

if TYPE_CHECKING:
    from core.config import Settings


@dataclass(frozen=True)
class Outcome:
    """One service's cycle: its decision (None if it could not be decided), applied or not, the audit row."""

    service: str
    decision: Decision | None = None
    snapshot: Snapshot | None = None
    applied: bool = False
    event_id: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.decision is not None and self.error is None

    @property
    def failure(self) -> str | None:
        """Why this cycle failed: an error, or every metric failed (the fallback's decision stands)."""
        if self.error is not None:
            return self.error
        return self.decision.reason if self.decision is not None and self.decision.metrics_failed else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.decision.as_dict() if self.decision else {
            "service": self.service, "current_replicas": None, "desired_replicas": None, "metrics": [],
            "limited_by": [], "reason": None}
        out.update(applied=self.applied, event_id=self.event_id, error=self.error)
        return out


def make_target(spec: Target, settings: Settings) -> ScaleTarget:
    """The adapter for a policy's ``target`` (Kubernetes imported only when a service needs it)."""
    if spec.kind == "local":
        from opsctl.scaling.local import LocalTarget

        return LocalTarget(spec.url or settings.api_url, settings.admin_token)
    try:
        module = importlib.import_module("opsctl.scaling.kubernetes")
    except ModuleNotFoundError as exc:
        raise OperationFailed(f"{spec.kind} targets need the kubernetes adapter: {exc}") from exc
    assert spec.name is not None
    return cast(ScaleTarget, module.KubernetesTarget(spec.kind, spec.name, spec.namespace, spec.context))


def from_snapshots(policy: AutoscalingPolicy, names: list[str], data: Any, file: str | None = None) -> list[Decision]:
    """Decide from recorded snapshots (each at its own ``now``); nothing is read or applied.

    ``file``, where ``data`` was read from, is named in errors."""
    if not names and isinstance(data, dict) and "current_replicas" not in data:
        names = list(data)  # a file of snapshots by service: every service it holds
    chosen = policy.select(names)
    snaps = snapshots.parse_for_services(data, list(chosen), file)
    return [decide(name, chosen[name], snap, snap.now) for name, snap in snaps.items()]


def _prometheus_url(policy: AutoscalingPolicy, settings: Settings) -> str:
    url = policy.prometheus.url or settings.prometheus_url
    if not url:
        raise ConfigError("no Prometheus: set prometheus.url in the policy or OPSCTL_PROMETHEUS_URL "
                          "(`opsctl up` starts one when the prometheus binary is installed)")
    return url


def run(settings: Settings, policy: AutoscalingPolicy, names: list[str] | None = None, *, apply: bool = False,
        force: bool = False, now: Callable[[], datetime] | None = None,
        targets: Callable[[Target, Settings], ScaleTarget] = make_target) -> list[Outcome]:
    """One autoscaling cycle for the services named (all when empty); never raises for one service."""
    from opsctl.context import connect_db
    from opsctl.scaling import history
    from opsctl.scaling.prometheus import PrometheusSource

    clock = now or (lambda: datetime.now(UTC))
    chosen = policy.select(names)
    source = PrometheusSource(_prometheus_url(policy, settings), policy.prometheus.timeoutSeconds)
    outcomes = []
    with connect_db(settings) as conn:
        for name, svc in chosen.items():
            try:
                outcomes.append(_cycle(conn, settings, name, svc, source, apply, force, clock(), targets))
            except OpsError as exc:
                outcomes.append(Outcome(name, error=exc.message))
        history.prune(conn, clock())
    return outcomes


def _cycle(conn: Any, settings: Settings, name: str, svc: ServicePolicy, source: Any, apply: bool, force: bool,
           now: datetime, targets: Callable[[Target, Settings], ScaleTarget]) -> Outcome:
    from opsctl import audit
    from opsctl.scaling import history
    from opsctl.scaling.metrics import METRIC_ERRORS

    target = targets(svc.target, settings)
    with conn.transaction():
        history.lock(conn, name)
        state = target.read()
        snap = Snapshot(now=now, current_replicas=state.replicas, ready_replicas=state.ready_replicas,
                        metrics=source.read(svc.metrics, state), history=history.load(conn, name, now))
        decision = decide(name, svc, snap, now)
        for metric in decision.metrics:
            if metric.error:
                METRIC_ERRORS.labels(name, metric.name).inc()
        applied, refused = False, None
        if apply and decision.change:
            try:
                if not force:
                    target.check_unmanaged()
                target.scale(decision.desired_replicas)
                applied = True
            except OpsError as exc:
                refused = exc.message
        history.remember(conn, name, decision, now, applied)
        event_id = audit.record(
            conn, "scale.decide", target=name, from_state=decision.current_replicas,
            to_state=decision.desired_replicas, reason=decision.reason, change=applied,
            details={"snapshot": snapshots.to_dict(snap), "decision": decision.as_dict(), "applied": applied,
                     "target": target.description, "min_replicas": svc.minReplicas, "max_replicas": svc.maxReplicas,
                     **({"error": refused} if refused else {})})
    return Outcome(name, decision, snap, applied, event_id, refused)


def set_replicas(settings: Settings, policy: AutoscalingPolicy, name: str, replicas: int, reason: str, *,
                 apply: bool, force: bool = False) -> dict[str, Any]:
    """``opsctl scale set``: a manual count (within min/max), audited, remembered as a scale event."""
    from opsctl import audit
    from opsctl.context import connect_db
    from opsctl.scaling import history

    svc = policy.select([name])[name]
    if not svc.minReplicas <= replicas <= svc.maxReplicas:
        raise ConfigError(f"{name}: {replicas} is outside minReplicas..maxReplicas "
                          f"({svc.minReplicas}..{svc.maxReplicas}); change the policy first")
    target = make_target(svc.target, settings)
    current = target.read().replicas
    plan = {"service": name, "current_replicas": current, "desired_replicas": replicas, "reason": reason,
            "applied": False, "event_id": None}
    if not apply or current == replicas:
        return plan
    if not force:
        target.check_unmanaged()
    now = datetime.now(UTC)
    with connect_db(settings) as conn, conn.transaction():
        history.lock(conn, name)
        target.scale(replicas)
        history.record_scale(conn, name, now, current, replicas)
        plan["event_id"] = audit.record(conn, "scale.set", target=name, from_state=current, to_state=replicas,
                                        reason=reason, details={"target": target.description})
    plan["applied"] = True
    return plan


def set_paused(settings: Settings, policy: AutoscalingPolicy, name: str, paused: bool,
               reason: str | None) -> dict[str, Any]:
    """``opsctl scale pause|resume``: persisted, so the daemon and every CLI run see it; audited."""
    from opsctl import audit
    from opsctl.context import connect_db
    from opsctl.scaling import history

    policy.select([name])
    action = "scale.pause" if paused else "scale.resume"
    with connect_db(settings) as conn, conn.transaction():
        history.lock(conn, name)
        before = history.set_paused(conn, name, paused, reason)
        event_id = audit.record(conn, action, target=name, from_state="paused" if before else "active",
                                to_state="paused" if paused else "active", reason=reason)
    return {"service": name, "paused": paused, "was_paused": before, "event_id": event_id}


def explain(settings: Settings, event_id: int, policy: AutoscalingPolicy | None = None) -> dict[str, Any]:
    """Replay a stored ``scale.decide``: its snapshot through ``decide`` with the policy of now.

    Returns the stored decision and the replayed one; ``same`` says whether they agree (they
    differ only when the policy changed since)."""
    from opsctl.context import connect_db
    from opsctl.scaling import history

    with connect_db(settings) as conn:
        row = history.stored_decision(conn, event_id)
    if row is None:
        raise NotFound(f"no scale.decide event {event_id} (see `opsctl events --all --action scale.decide`)")
    name, details = row["target"], row["details"]
    snap = snapshots.parse(details["snapshot"])
    stored = details["decision"]
    out: dict[str, Any] = {"event_id": event_id, "service": name, "at": snapshots.iso(row["at"]),
                           "applied": details.get("applied", False), "stored": stored, "snapshot": details["snapshot"]}
    if policy is not None and name in policy.services:
        replay = decide(name, policy.services[name], snap, snap.now).as_dict()
        out["replayed"] = replay
        out["same"] = all(replay[k] == stored.get(k) for k in ("desired_replicas", "limited_by", "reason"))
    return out
