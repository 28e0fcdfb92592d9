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

Every problem is a :class:`SnapshotError` (a ConfigError: exit 2) naming the file when there is
one, the field and the reason. Times lie between 1970 and 9998, counts within int32, numbers are
finite; a file is at most 8 MiB and 32 levels deep (found by :func:`core.jsondepth.deeper_than`, one
linear pass over the text before the parser recurses), and an integer of more than 20 digits is out
of range (it is refused where it stands, not by the JSON reader's 4,300-digit limit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.jsondepth import deeper_than

POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
INT32 = 2**31 - 1  # Kubernetes' replica counts; the history's columns
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
MAX_BYTES = 8 << 20
MAX_DEPTH = 32  # a snapshot nests 5 levels deep
MAX_DIGITS = 20


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


class SnapshotError(ConfigError):
    """A snapshot that cannot be replayed: the file (if any), the field and the reason."""

    def __init__(self, where: str, reason: str, file: str | None = None) -> None:
        self.where, self.reason, self.file = where, reason, file
        head = f"snapshot {file}" if file else "snapshot"
        super().__init__(f"{head}: {where}: {reason}" if where else f"{head}: {reason}")

    def within(self, service: str | None = None, file: str | None = None) -> SnapshotError:
        """The same error, inside ``service``'s snapshot of ``file``."""
        where = ".".join(p for p in (service, self.where) if p)
        return SnapshotError(where, self.reason, file or self.file)


_fail = SnapshotError


@dataclass(frozen=True)
class _LongNumber:
    """What the reader makes of an integer of more than MAX_DIGITS digits: refused where it stands."""

    digits: int

    def __str__(self) -> str:
        return f"a {self.digits:,}-digit number"


def _shown(value: Any) -> str:
    """A value in an error message: short, and safe for anything JSON can hold."""
    if isinstance(value, _LongNumber):
        return str(value)
    if isinstance(value, dict | list):
        return f"an {'object' if isinstance(value, dict) else 'array'}"
    text = json.dumps(value) if isinstance(value, bool) or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _time(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise _fail(where, "expected an ISO 8601 time such as 2026-11-22T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _fail(where, f"{_shown(value)} is not an ISO 8601 time such as 2026-11-22T12:00:00Z") from None
    try:
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        parsed = LATEST
    if not EARLIEST <= parsed < LATEST:
        raise _fail(where, f"{_shown(value)} is out of range ({EARLIEST.year} to {LATEST.year - 1})")
    return parsed


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, _LongNumber):
        raise _fail(where, f"{value} is out of range")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"expected an integer, got {_shown(value)}")
    if value < minimum:
        raise _fail(where, f"must be >= {minimum}, got {value}")
    if value > INT32:
        raise _fail(where, f"must be <= {INT32}, got {value}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, _LongNumber):
        raise _fail(where, f"{value} is out of range")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {_shown(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(where, f"must be finite, got {number}")
    return number


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """``value`` if it is an object whose keys are all ``allowed`` (any keys when None)."""
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    extra = sorted(set(value) - set(allowed)) if allowed is not None else []
    if extra:
        raise _fail(where, f"unknown key(s) {', '.join(extra)} (allowed: {', '.join(allowed or ())})")
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
            raise _fail(f"{where}.{key}", f"expected true or false, got {_shown(data[key])}")
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
    return MetricSample(value=_number(data["value"], f"{where}.value"))


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
        events.append((_time(ev.get("at"), f"{where}.at"), _int(ev.get("change"), f"{where}.change", -INT32)))
    paused = data.get("paused", False)
    if not isinstance(paused, bool):
        raise _fail("history.paused", f"expected true or false, got {_shown(paused)}")
    last_active = data.get("last_active")
    return History(
        recommendations=tuple(recs), scale_events=tuple(events),
        consecutive_failures=_int(data.get("consecutive_failures", 0), "history.consecutive_failures"),
        last_active=None if last_active is None else _time(last_active, "history.last_active"),
        paused=paused,
    )


def parse(data: Any) -> Snapshot:
    """A snapshot from its JSON form; every problem is a SnapshotError naming the key path."""
    data = _mapping(data, "", ("now", "current_replicas", "ready_replicas", "metrics", "history"))
    if "now" not in data:
        raise _fail("now", "missing (the time of the decision)")
    if "current_replicas" not in data:
        raise _fail("current_replicas", "missing")
    current = _int(data["current_replicas"], "current_replicas")
    ready = _int(data.get("ready_replicas", current), "ready_replicas")
    metrics = _mapping(data.get("metrics", {}), "metrics")
    return Snapshot(
        now=_time(data["now"], "now"), current_replicas=current, ready_replicas=ready,
        metrics={str(name): _metric(m, f"metrics.{name}") for name, m in metrics.items()},
        history=_history(data.get("history", {})),
    )


def _integer(digits: str) -> int | _LongNumber:
    count = len(digits.lstrip("-"))
    return _LongNumber(count) if count > MAX_DIGITS else int(digits)


def read(path: Path) -> Any:
    """The JSON document of a snapshot file: one snapshot, or ``{service: snapshot}``.

    Raises SnapshotError naming the file for anything wrong with it."""
    from opsctl.files import FileProblem, read_text

    try:
        text = read_text(path, MAX_BYTES, "a snapshot")
    except FileProblem as exc:
        raise SnapshotError("", exc.reason, f"{path}:{exc.line}" if exc.line else str(path)) from exc
    where = deeper_than(text, MAX_DEPTH)
    if where is not None:
        raise SnapshotError(where, f"nested deeper than {MAX_DEPTH} levels", str(path))
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as exc:
        raise SnapshotError("", f"not valid JSON: {exc.msg}", f"{path}:{exc.lineno}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SnapshotError("", f"not readable as JSON ({type(exc).__name__}: {str(exc)[:200]})", str(path)) from exc


def parse_for_services(data: Any, services: list[str], file: str | None = None) -> dict[str, Snapshot]:
    """One snapshot for one service, or ``{service: snapshot, ...}`` for several.

    A document with ``current_replicas`` at the top is one snapshot: it needs exactly one service.
    Errors name ``file`` (where the document came from) and, in a file of several, the service.
    """
    if isinstance(data, dict) and "current_replicas" in data:
        if len(services) != 1:
            raise ConfigError(f"the snapshot holds one service's state; name exactly one service "
                              f"(given: {', '.join(services) or 'none'})")
        try:
            return {services[0]: parse(data)}
        except SnapshotError as exc:
            raise exc.within(file=file) from None
    if not isinstance(data, dict):
        raise SnapshotError("", "expected a snapshot object or an object of snapshots by service", file)
    wanted = services or list(data)
    missing = [s for s in wanted if s not in data]
    if missing:
        raise SnapshotError("", f"no snapshot for {', '.join(missing)} (has: {', '.join(data) or 'none'})", file)
    out = {}
    for name in wanted:
        try:
            out[name] = parse(data[name])
        except SnapshotError as exc:
            raise exc.within(name, file) from None
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
