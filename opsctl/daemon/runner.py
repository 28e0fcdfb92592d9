"""One run of one job: resolve ``module:function``, call it, record the outcome, count it.

Jobs are imported when they run, so a missing module is a failed run with its error, not a
crashed daemon. A job returns one sentence saying what it decided; an ``OpsError`` is a failure
with its message; any other exception is a failure too, logged with its traceback.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.clock import Clock, utcnow
from core.config import Settings
from core.errors import OpsError
from opsctl.daemon import metrics

log = logging.getLogger("opsctl.daemon")

JobFunction = Callable[[Settings, Path], str]


@dataclass
class RunResult:
    job: str
    scheduled_at: datetime
    start: datetime
    end: datetime
    outcome: str  # ok | failed
    sentence: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def summary(self) -> str:
        text = self.sentence if self.outcome == "ok" else f"failed: {self.error}"
        return f"{self.job}: {text} ({self.duration_seconds:.1f} s)"

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.job, "scheduled_at": self.scheduled_at.isoformat(),
                               "start": self.start.isoformat(), "end": self.end.isoformat(),
                               "duration_seconds": round(self.duration_seconds, 3), "outcome": self.outcome}
        out["sentence" if self.outcome == "ok" else "error"] = self.sentence if self.outcome == "ok" else self.error
        out.update(self.extra)
        return out


def resolve(target: str) -> JobFunction:
    """Import ``module:function``; raises OpsError saying what is missing."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OpsError(f"cannot import {module_name}: {exc}") from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise OpsError(f"{module_name} has no function {attr}")
    return func  # type: ignore[no-any-return]


def execute(job: str, target: str, settings: Settings, policy_dir: Path, scheduled_at: datetime,
            clock: Clock = utcnow) -> RunResult:
    """Run the job once and return what happened; never raises for the job's own failures."""
    start = clock()
    began = time.monotonic()
    try:
        sentence = resolve(target)(settings, policy_dir)
        outcome, error = "ok", None
        sentence = str(sentence).strip() or "done"
    except OpsError as exc:
        outcome, sentence, error = "failed", None, exc.message
        log.warning("job %s failed: %s", job, exc.message)
    except Exception as exc:
        outcome, sentence, error = "failed", None, f"{type(exc).__name__}: {exc}"
        log.exception("job %s raised an unexpected exception", job)
    end = max(clock(), start)
    result = RunResult(job, scheduled_at, start, end, outcome, sentence, error)
    metrics.JOB_RUNS.labels(job, outcome).inc()
    metrics.JOB_DURATION.labels(job).observe(time.monotonic() - began)
    if outcome == "ok":
        metrics.JOB_LAST_SUCCESS.labels(job).set(end.timestamp())
    return result


def record(url: str, result: RunResult, runner: str) -> None:
    """Finish the run's ``daemon_runs`` claim and record it: a ``daemon.job`` row of ``ops_decisions``
    (a job run changes nothing by itself; what the job changed, it records as changes)."""
    from core.db import connect
    from opsctl.audit import record as audit

    with connect(url, autocommit=True, connect_timeout=5) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO daemon_runs (job, scheduled_at, runner, started_at, finished_at, outcome)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job, scheduled_at)"
            " DO UPDATE SET finished_at = excluded.finished_at, outcome = excluded.outcome",
            (result.job, result.scheduled_at, runner, result.start, result.end, result.outcome))
        audit(conn, "daemon.job", target=result.job, to_state=result.outcome,
              reason=result.sentence if result.outcome == "ok" else result.error, details=result.details(),
              change=False)


def run_once(settings: Settings, policy_dir: Path, job: str, clock: Clock = utcnow) -> RunResult:
    """``opsctl daemon --once JOB``: run one job now (no leader election) and record it."""
    import shutil
    import tempfile

    from core.errors import ConfigError
    from opsctl.audit import default_actor
    from opsctl.context import database_url
    from opsctl.daemon.policies import load_policy_set
    from opsctl.daemon.schedule import REGISTRY

    url = database_url(settings)
    snapshot_root = Path(tempfile.mkdtemp(prefix="opsctl-once-"))
    try:
        policies = load_policy_set(policy_dir, snapshot_root)
        entry = policies.schedule.jobs.get(job)
        target = (entry.run if entry is not None else None) or REGISTRY.get(job)
        if target is None:
            known = sorted(set(policies.schedule.jobs) | set(REGISTRY))
            raise ConfigError(f"unknown job {job!r}: one of {', '.join(known)}")
        result = execute(job, target, settings, policies.snapshot, clock(), clock)
        record(url, result, f"once {default_actor()}"[:63])
        return result
    finally:
        shutil.rmtree(snapshot_root, ignore_errors=True)
