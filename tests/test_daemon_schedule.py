"""The schedule policy and the daemon's pure timing decisions, by table."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opsctl.daemon.schedule import (
    REGISTRY,
    SchedulePolicy,
    due_jobs,
    job_specs,
    last_fire_time,
)
from opsctl.policy import PolicyError, load, parse_duration
from tests.conftest import project_root

T = datetime(2026, 3, 1, 3, 0, 0, tzinfo=UTC)  # a Sunday, 03:00 UTC


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("500ms", 0.5), (45, 45),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "30x", "m5", "0s", "-5m", "5 minutes",
                                  "1000000000d", "999999999999999999999d"])  # beyond what a timedelta holds
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def specs(jobs: dict[str, dict[str, object]]) -> dict[str, object]:
    return job_specs(SchedulePolicy.model_validate({"jobs": jobs}))  # type: ignore[return-value]


@pytest.mark.parametrize(("job", "now", "expected"), [
    # intervals are aligned to the epoch: every replica agrees on the scheduled times
    ({"every": "30s"}, T + timedelta(seconds=7), T),
    ({"every": "30s"}, T + timedelta(seconds=30), T + timedelta(seconds=30)),
    ({"every": "5m"}, T + timedelta(minutes=4, seconds=59), T),
    # cron: the latest time within the grace window, or none
    ({"cron": "0 3 * * *"}, T + timedelta(minutes=20), T),
    ({"cron": "0 3 * * *"}, T + timedelta(hours=2), None),
    ({"cron": "0 3 * * *", "misfire_grace_time": "3h"}, T + timedelta(hours=2), T),
    ({"cron": "0 3 * * *"}, T - timedelta(seconds=1), None),
    # crontab's weekdays: 0 and 7 are Sunday (APScheduler's own numbering starts at Monday)
    ({"cron": "0 3 * * 0"}, T + timedelta(minutes=1), T),
    ({"cron": "0 3 * * 7"}, T + timedelta(minutes=1), T),
    ({"cron": "0 3 * * 1-5"}, T + timedelta(minutes=1), None),
    ({"cron": "0 3 * * 1-5"}, T + timedelta(days=1, minutes=1), T + timedelta(days=1)),
    ({"cron": "0 3 * * 6,0"}, T + timedelta(minutes=1), T),
    ({"cron": "0 3 * * sun"}, T + timedelta(minutes=1), T),
])
def test_last_fire_time(job: dict[str, object], now: datetime, expected: datetime | None) -> None:
    spec = specs({"autoscale": job})["autoscale"]
    assert last_fire_time(spec.trigger, now, spec.grace) == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(("last_runs", "now", "expected"), [
    # nothing ever ran: the latest scheduled time of each job within its grace
    ({}, T + timedelta(seconds=10), {"autoscale": T, "backup-full": T}),
    # already run by the old leader: nothing to catch up
    ({"autoscale": T, "backup-full": T}, T + timedelta(seconds=10), {}),
    # the old leader died before the 03:00 full backup; autoscale ran its latest
    ({"autoscale": T, "backup-full": T - timedelta(days=7)}, T + timedelta(seconds=10), {"backup-full": T}),
    # too late for the weekly backup (grace 1h): wait for next week; autoscale's new tick is due
    ({"autoscale": T}, T + timedelta(hours=2), {"autoscale": T + timedelta(hours=2)}),
    # disabled jobs are never due
])
def test_due_jobs(last_runs: dict[str, datetime], now: datetime, expected: dict[str, datetime]) -> None:
    jobs = specs({"autoscale": {"every": "30s"}, "backup-full": {"cron": "0 3 * * 0"},
                  "backup-prune": {"cron": "0 3 * * *", "enabled": False}})
    assert due_jobs(jobs, last_runs, now) == expected  # type: ignore[arg-type]


def test_the_shipped_schedule_validates_and_covers_every_job() -> None:
    policy = load(SchedulePolicy, "schedule", project_root() / "policies" / "schedule.yaml")
    assert set(policy.jobs) == set(REGISTRY)
    assert policy.jobs["autoscale"].every == "30s" and policy.jobs["cache-policy"].every == "5m"
    assert policy == SchedulePolicy.model_validate({}), "the built-in schedule (no file) is the shipped one"
    out = subprocess.run([sys.executable, "-m", "opsctl.cli", "policy", "validate", "policies/schedule.yaml"],
                         cwd=project_root(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize(("yaml", "message"), [
    ("jobs:\n  autoscale:\n    every: 30s\n    cron: '* * * * *'\n",
     "schedule.yaml:2: jobs.autoscale: set exactly one of every (an interval) or cron"),
    ("jobs:\n  autoscale:\n    every: soon\n", "schedule.yaml:3: jobs.autoscale.every: invalid duration 'soon'"),
    ("jobs:\n  nightly:\n    cron: '0 25 * * *'\n", "schedule.yaml:3: jobs.nightly.cron: invalid cron expression"),
    ("jobs:\n  mine:\n    every: 1m\n", "schedule.yaml:1: jobs: job 'mine' is not a built-in job"),
    ("jobs:\n  mine:\n    every: 1m\n    run: not-a-path\n", "schedule.yaml:4: jobs.mine.run: run must be"),
    ("jobs:\n  autoscale:\n    evry: 1m\n", "schedule.yaml:3: jobs.autoscale.evry: Extra inputs are not permitted"),
    ("timezone: Mars/Olympus\n", "schedule.yaml:1: timezone: unknown time zone 'Mars/Olympus'"),
])
def test_invalid_schedules_name_line_and_reason(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml)
    with pytest.raises(PolicyError) as err:
        load(SchedulePolicy, "schedule", path)
    assert message in str(err.value)
