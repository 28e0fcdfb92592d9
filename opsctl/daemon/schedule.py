"""``policies/schedule.yaml``: which jobs the daemon runs and when, and the pure timing decisions.

A job runs every ``every`` (aligned to the Unix epoch, so every replica computes the same
scheduled times) or on a ``cron`` expression (5 fields, in ``timezone``). A run may start late by
at most ``misfire_grace_time``; later than that it is skipped until the next scheduled time.

Pure: no database, no I/O; the clock is always passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, field_validator, model_validator

from opsctl.policy import PolicyModel, parse_duration

# the jobs every piece of opsctl exposes: name → "module:function"
REGISTRY: dict[str, str] = {
    "autoscale": "opsctl.scaling.jobs:job_autoscale",
    "cache-policy": "opsctl.cachepolicy.jobs:job_cache_policy",
    "partition-rotation": "opsctl.partitions.jobs:job_partition_rotation",
    "backup-incremental": "opsctl.backup.jobs:job_backup_incremental",
    "backup-full": "opsctl.backup.jobs:job_backup_full",
    "restore-drill": "opsctl.backup.jobs:job_restore_drill",
    "index-maintenance": "opsctl.vindex.jobs:job_index_maintenance",
    "tenant-indexes": "opsctl.vindex.jobs:job_tenant_indexes",
    "backup-prune": "opsctl.backup.jobs:job_backup_prune",
    "reembed": "opsctl.reembed.jobs:job_reembed",
    "slow-queries": "opsctl.slowqueries.jobs:job_slow_queries",
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CRON_DEFAULT_GRACE = timedelta(hours=1)
_RUN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_days(field: str) -> str:
    """Crontab's day-of-week numbers (0 or 7 = Sunday) as names: APScheduler 3 counts 0 as Monday."""
    out = []
    for token in field.split(","):
        span, _, step = token.partition("/")
        first, _, last = span.partition("-")
        if not (first.isdigit() and (not last or last.isdigit())):
            out.append(token)  # *, */2, names: the same in both conventions
            continue
        lo, hi = int(first), int(last) if last else int(first)
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"day of week {token!r} is out of range 0-7")
        days = range(lo, hi + 1, int(step)) if step else range(lo, hi + 1)
        out.extend(_DAYS[d] for d in days)
    return ",".join(dict.fromkeys(out))


def cron_trigger(expression: str, timezone: Any = UTC) -> Any:
    """An APScheduler CronTrigger for a standard 5-field crontab line (Sunday = 0 or 7)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_days(weekday),
                       timezone=timezone)


class JobSchedule(PolicyModel):
    """One job: ``every`` or ``cron``, whether it is enabled, its grace time and what it runs."""

    every: str | None = Field(None, description="interval, e.g. 30s, 5m, 1h (aligned to the epoch)")
    cron: str | None = Field(None, description='5-field cron expression, e.g. "0 3 * * *"')
    enabled: bool = True
    misfire_grace_time: str | None = Field(
        None, description="how late a run may start; default: the interval (at most 1h), or 1h for cron")
    run: str | None = Field(None, description='"module:function"; default: the registered job of this name')

    @field_validator("every", "misfire_grace_time")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                cron_trigger(value)
            except ValueError as exc:
                raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value

    @field_validator("run")
    @classmethod
    def _run(cls, value: str | None) -> str | None:
        if value is not None and not _RUN.match(value):
            raise ValueError(f"run must be 'module:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> JobSchedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError("set exactly one of every (an interval) or cron")
        return self


def _default_jobs() -> dict[str, JobSchedule]:
    return {
        "autoscale": JobSchedule.model_validate({"every": "30s"}),
        "cache-policy": JobSchedule.model_validate({"every": "5m"}),
        "partition-rotation": JobSchedule.model_validate({"cron": "15 0 * * *"}),
        "backup-incremental": JobSchedule.model_validate({"cron": "0 2 * * *"}),
        "backup-full": JobSchedule.model_validate({"cron": "0 3 * * 0"}),
        "restore-drill": JobSchedule.model_validate({"cron": "0 5 * * 0", "misfire_grace_time": "6h"}),
        "index-maintenance": JobSchedule.model_validate({"cron": "0 4 * * *"}),
        "tenant-indexes": JobSchedule.model_validate({"cron": "30 4 * * *", "misfire_grace_time": "2h"}),
        "backup-prune": JobSchedule.model_validate({"cron": "30 6 * * *"}),
        "reembed": JobSchedule.model_validate({"every": "30s"}),
        "slow-queries": JobSchedule.model_validate({"every": "1m"}),
    }


class SchedulePolicy(PolicyModel):
    """``policies/schedule.yaml``."""

    timezone: str = Field("UTC", description="time zone of the cron expressions")
    jobs: dict[str, JobSchedule] = Field(default_factory=_default_jobs)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("jobs")
    @classmethod
    def _known(cls, jobs: dict[str, JobSchedule]) -> dict[str, JobSchedule]:
        for name, job in jobs.items():
            if job.run is None and name not in REGISTRY:
                raise ValueError(f"job {name!r} is not a built-in job ({', '.join(REGISTRY)}): "
                                 "set run: 'module:function'")
        return jobs


@dataclass(frozen=True)
class JobSpec:
    """A job ready to schedule: its trigger, grace time and target."""

    name: str
    run: str
    trigger: Any
    grace: timedelta
    every: str | None
    cron: str | None

    @property
    def when(self) -> str:
        return f"every {self.every}" if self.every else f"cron {self.cron}"


def job_specs(policy: SchedulePolicy) -> dict[str, JobSpec]:
    """The enabled jobs of ``policy`` with their APScheduler triggers."""
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.interval import IntervalTrigger

    zone = ZoneInfo(policy.timezone)
    specs = {}
    for name, job in policy.jobs.items():
        if not job.enabled:
            continue
        if job.every is not None:
            interval = parse_duration(job.every)
            trigger: Any = IntervalTrigger(seconds=interval.total_seconds(), start_date=EPOCH, timezone=UTC)
            grace = min(interval, CRON_DEFAULT_GRACE)
        else:
            assert job.cron is not None
            trigger = cron_trigger(job.cron, zone)
            grace = CRON_DEFAULT_GRACE
        if job.misfire_grace_time is not None:
            grace = parse_duration(job.misfire_grace_time)
        specs[name] = JobSpec(name, job.run or REGISTRY[name], trigger, grace, job.every, job.cron)
    return specs


def last_fire_time(trigger: Any, now: datetime, lookback: timedelta) -> datetime | None:
    """The latest scheduled time of ``trigger`` in ``(now - lookback, now]``, or None."""
    fire = trigger.get_next_fire_time(None, now - lookback)
    last = None
    while fire is not None and fire <= now:
        last = fire
        fire = trigger.get_next_fire_time(fire, fire)
    return last


def next_fire_time(trigger: Any, now: datetime) -> datetime | None:
    return trigger.get_next_fire_time(None, now)  # type: ignore[no-any-return]


def due_jobs(specs: Mapping[str, JobSpec], last_runs: Mapping[str, datetime | None],
             now: datetime) -> dict[str, datetime]:
    """Jobs whose latest scheduled time is still within its grace time and has not run yet.

    ``last_runs`` maps a job to the latest scheduled time already run (by any replica). A new
    leader calls this to catch up on what the old one missed; the result maps job → scheduled time.
    """
    due = {}
    for name, spec in specs.items():
        fire = last_fire_time(spec.trigger, now, spec.grace)
        last = last_runs.get(name)
        if fire is not None and (last is None or last < fire):
            due[name] = fire
    return due
