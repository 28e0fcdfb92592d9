"""Snapshots: everything one scaling decision depends on, as a JSON contract.

``decide(name, policy, snapshot, now)`` reads nothing else, so a stored snapshot replays the
decision exactly (``opsctl scale explain``, ``opsctl scale SERVICE --snapshot FILE``)::

    {"now": "2026-11-22T12:00:00Z", "current_replicas": 3, "ready_replicas": 3,
     "metrics": {"backlog": {"value": 450},
                 "cpu": {"pods": [{"usage": 600, "request": 2000, "ready": true, "phase": "Running"}]},
                 "broken": {"error": "prometheus: no data"}},
     "history": {"recommendations": [{"at": "...", "replicas": 4}],
                 "scale_events": [{"at": "...", "change": 2}],
                 "consecutive_failures": 0, "last_active": "...", "paused": false}}

``value`` is the query's result (for AverageValue the total across the service); a pod without
``usage`` has no metric; ``ready_replicas`` defaults to ``current_replicas``; ``history`` and
each of its keys are optional.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


@dataclass(frozen=True)
class PodSample:
    request: float | None
    usage: float | None = None  # None: the pod has no metric ("missing")
    ready: bool = True
    phase: str = "Running"
    deleting: bool = False
    name: str | None = None


@dataclass(frozen=True)
class MetricSample:
    """One metric's reading: a ``value``, per-pod samples (Utilization) or an ``error``."""

    value: float | None = None
    pods: tuple[PodSample, ...] | None = None
    error: str | None = None


@dataclass(frozen=True)
class History:
    recommendations: tuple[tuple[datetime, int], ...] = ()  # (at, unstabilized recommendation)
    scale_events: tuple[tuple[datetime, int], ...] = ()  # (at, signed replica change)
    consecutive_failures: int = 0  # decisions in a row where every metric failed
    last_active: datetime | None = None  # scale to zero: last time the activation metric was active
    paused: bool = False  # `opsctl scale pause`


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    current_replicas: int
    ready_replicas: int
    metrics: dict[str, MetricSample] = field(default_factory=dict)
    history: History = field(default_factory=History)


# --- parsing ------------------------------------------------------------------------------------


def _fail(where: str, reason: str) -> ConfigError:
    return ConfigError(f"snapshot: {where}: {reason}" if where else f"snapshot: {reason}")


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise _fail(where, "expected an ISO 8601 time such as 2026-11-22T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _fail(where, f"{value!r} is not an ISO 8601 time such as 2026-11-22T12:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"expected an integer, got {value!r}")
    if value < minimum:
        raise _fail(where, f"must be >= {minimum}, got {value}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise _fail(where, f"unknown key(s) {', '.join(extra)} (allowed: {', '.join(allowed)})")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {type(value).__name__}")
    return value


def _pod(data: Any, where: str) -> PodSample:
    data = _mapping(data, where, ("name", "usage", "request", "ready", "phase", "deleting"))
    phase = data.get("phase", "Running")
    if phase not in POD_PHASES:
        raise _fail(f"{where}.phase", f"{phase!r} is not one of {', '.join(POD_PHASES)}")
    for key in ("ready", "deleting"):
        if key in data and not isinstance(data[key], bool):
            raise _fail(f"{where}.{key}", f"expected true or false, got {data[key]!r}")
    usage = data.get("usage")
    request = data.get("request")
    return PodSample(
        request=None if request is None else _number(request, f"{where}.request"),
        usage=None if usage is None else _number(usage, f"{where}.usage"),
        ready=data.get("ready", True), phase=phase, deleting=data.get("deleting", False),
        name=None if data.get("name") is None else str(data["name"]),
    )


def _metric(data: Any, where: str) -> MetricSample:
    data = _mapping(data, where, ("value", "pods", "error"))
    given = [k for k in ("value", "pods", "error") if data.get(k) is not None]
    if len(given) != 1:
        raise _fail(where, "give exactly one of value, pods or error")
    if "error" in given:
        return MetricSample(error=str(data["error"]))
    if "pods" in given:
        pods = _list(data["pods"], f"{where}.pods")
        return MetricSample(pods=tuple(_pod(p, f"{where}.pods[{i}]") for i, p in enumerate(pods)))
    value = _number(data["value"], f"{where}.value")
    if not math.isfinite(value):
        raise _fail(f"{where}.value", "must be finite")
    return MetricSample(value=value)


def _history(data: Any) -> History:
    data = _mapping(data, "history", ("recommendations", "scale_events", "consecutive_failures",
                                      "last_active", "paused"))
    recs = []
    for i, rec in enumerate(_list(data.get("recommendations", []), "history.recommendations")):
        where = f"history.recommendations[{i}]"
        rec = _mapping(rec, where, ("at", "replicas"))
        recs.append((_time(rec.get("at"), f"{where}.at"), _int(rec.get("replicas"), f"{where}.replicas")))
    events = []
    for i, ev in enumerate(_list(data.get("scale_events", []), "history.scale_events")):
        where = f"history.scale_events[{i}]"
        ev = _mapping(ev, where, ("at", "change"))
        events.append((_time(ev.get("at"), f"{where}.at"), _int(ev.get("change"), f"{where}.change", -10**9)))
    paused = data.get("paused", False)
    if not isinstance(paused, bool):
        raise _fail("history.paused", f"expected true or false, got {paused!r}")
    last_active = data.get("last_active")
    return History(
        recommendations=tuple(recs), scale_events=tuple(events),
        consecutive_failures=_int(data.get("consecutive_failures", 0), "history.consecutive_failures"),
        last_active=None if last_active is None else _time(last_active, "history.last_active"),
        paused=paused,
    )


def parse(data: Any) -> Snapshot:
    """A snapshot from its JSON form; every problem is a ConfigError naming the key path."""
    data = _mapping(data, "", ("now", "current_replicas", "ready_replicas", "metrics", "history"))
    if "now" not in data:
        raise _fail("now", "missing (the time of the decision)")
    if "current_replicas" not in data:
        raise _fail("current_replicas", "missing")
    current = _int(data["current_replicas"], "current_replicas")
    ready = _int(data.get("ready_replicas", current), "ready_replicas")
    metrics = _mapping(data.get("metrics", {}), "metrics", tuple(data.get("metrics", {}) or ()))
    return Snapshot(
        now=_time(data["now"], "now"), current_replicas=current, ready_replicas=ready,
        metrics={str(name): _metric(m, f"metrics.{name}") for name, m in metrics.items()},
        history=_history(data.get("history", {})),
    )


def read(path: Path) -> Any:
    """The JSON document of a snapshot file: one snapshot, or ``{service: snapshot}``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"snapshot {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"snapshot {path}: unreadable: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"snapshot {path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc


def parse_for_services(data: Any, services: list[str]) -> dict[str, Snapshot]:
    """One snapshot for one service, or ``{service: snapshot, ...}`` for several.

    A document with ``current_replicas`` at the top is one snapshot: it needs exactly one service.
    """
    if isinstance(data, dict) and "current_replicas" in data:
        if len(services) != 1:
            raise ConfigError(f"the snapshot holds one service's state; name exactly one service "
                              f"(given: {', '.join(services) or 'none'})")
        return {services[0]: parse(data)}
    if not isinstance(data, dict):
        raise _fail("", "expected a snapshot object or an object of snapshots by service")
    wanted = services or list(data)
    missing = [s for s in wanted if s not in data]
    if missing:
        raise _fail("", f"no snapshot for {', '.join(missing)} (has: {', '.join(data) or 'none'})")
    out = {}
    for name in wanted:
        try:
            out[name] = parse(data[name])
        except ConfigError as exc:
            raise ConfigError(exc.message.replace("snapshot: ", f"snapshot: {name}.", 1)) from None
    return out


# --- serializing --------------------------------------------------------------------------------


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pod_dict(pod: PodSample) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pod.name is not None:
        out["name"] = pod.name
    if pod.usage is not None:
        out["usage"] = pod.usage
    out.update(request=pod.request, ready=pod.ready, phase=pod.phase)
    if pod.deleting:
        out["deleting"] = True
    return out


def _metric_dict(sample: MetricSample) -> dict[str, Any]:
    if sample.error is not None:
        return {"error": sample.error}
    if sample.pods is not None:
        return {"pods": [_pod_dict(p) for p in sample.pods]}
    return {"value": sample.value}


def to_dict(snap: Snapshot) -> dict[str, Any]:
    hist = snap.history
    history: dict[str, Any] = {
        "recommendations": [{"at": iso(at), "replicas": n} for at, n in hist.recommendations],
        "scale_events": [{"at": iso(at), "change": n} for at, n in hist.scale_events],
        "consecutive_failures": hist.consecutive_failures,
        "paused": hist.paused,
    }
    if hist.last_active is not None:
        history["last_active"] = iso(hist.last_active)
    return {
        "now": iso(snap.now), "current_replicas": snap.current_replicas, "ready_replicas": snap.ready_replicas,
        "metrics": {name: _metric_dict(m) for name, m in snap.metrics.items()},
        "history": history,
    }
