"""The daemon's skeleton (a guarded loop) and its pure role decision, by table; no database, no sleep."""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime, timedelta

import pytest

from opsctl.daemon.loop import ControlLoop
from opsctl.daemon.retention import Retention, cutoffs
from opsctl.daemon.role import LockCheck, Role, decide_role
from opsctl.daemon.schedule import SchedulePolicy, job_specs

NOW = datetime(2026, 3, 1, 3, 0, 10, tzinfo=UTC)
SPECS = job_specs(SchedulePolicy.model_validate({"jobs": {"autoscale": {"every": "30s"},
                                                          "backup-full": {"cron": "0 3 * * 0"}}}))


@pytest.mark.parametrize(("was_leading", "check", "running", "expected"), [
    # a leader that still holds the lock: its next run, and what is running
    (True, LockCheck(held=True), (), Role(True, None, "leader: 2 jobs scheduled, next autoscale in 20 s")),
    (True, LockCheck(held=True), ("backup-full",),
     Role(True, None, "leader: 2 jobs scheduled, next autoscale in 20 s; running backup-full")),
    # a leader whose connection died: stops acting at once; a running job finishes
    (True, LockCheck(held=False), ("backup-full",),
     Role(False, "lost", "lost leadership: the lock's connection failed; no job starts here until the lock is "
                         "retaken (backup-full still finishing)")),
    # followers
    (False, LockCheck(held=False, holder="opsctl-daemon b pid 7"), (),
     Role(False, None, "follower: opsctl-daemon b pid 7 leads")),
    (False, LockCheck(held=False), (), Role(False, None, "follower: another replica leads")),
    (False, LockCheck(held=False, error="connection refused"), (),
     Role(False, None, "follower: cannot reach PostgreSQL (connection refused); retrying")),
    # took the lock but cannot read past runs: let go (no catch-up is possible), retry
    (False, LockCheck(held=True, error="relation daemon_runs does not exist"), (),
     Role(False, None, "follower: cannot read past runs (relation daemon_runs does not exist); retrying",
          release=True)),
    # took the lock: catch up on what the previous leader missed (backup-full at 03:00, within its grace)
    (False, LockCheck(held=True, last_runs={"autoscale": NOW - timedelta(seconds=10)}), (),
     Role(True, "acquired", "became leader: 2 jobs scheduled; catching up on backup-full",
          catch_up={"backup-full": datetime(2026, 3, 1, 3, 0, tzinfo=UTC)})),
    (False, LockCheck(held=True, last_runs={"autoscale": NOW - timedelta(seconds=10),
                                            "backup-full": datetime(2026, 3, 1, 3, 0, tzinfo=UTC)}), (),
     Role(True, "acquired", "became leader: 2 jobs scheduled")),
])
def test_decide_role(was_leading: bool, check: LockCheck, running: tuple[str, ...], expected: Role) -> None:
    assert decide_role(was_leading, check, SPECS, NOW, running) == expected


@pytest.mark.parametrize(("last", "now", "due"), [
    (None, NOW, True),
    (NOW - timedelta(minutes=59), NOW, False),
    (NOW - timedelta(hours=1), NOW, True),
])
def test_prune_cutoffs(last: datetime | None, now: datetime, due: bool) -> None:
    got = cutoffs(Retention(), last, now)
    assert (got is not None) == due
    if got is not None:
        assert got == {"daemon_runs": now - timedelta(days=30), "ops_decisions": now - timedelta(days=35)}


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class Scripted(ControlLoop):
    """A loop whose cycles and reloads do what the test says, on a clock the test moves."""

    def __init__(self, steps: list[str]) -> None:
        self.ticks = 0.0
        self.overran = Counter()
        super().__init__(5.0, clock=lambda: NOW, log=logging.getLogger("test.loop"), overruns=self.overran,
                         monotonic=lambda: self.ticks, sleep=self._sleep)
        self.steps = steps
        self.done: list[str] = []

    def _sleep(self, seconds: float) -> None:
        self.ticks += seconds

    def cycle(self, now: datetime) -> str:
        step = self.steps.pop(0)
        if not self.steps:
            self.stop_requested = True
        if step == "raise":
            raise RuntimeError("boom\nsecond line")
        if step == "slow":
            self.ticks += 12.0
        if step == "hup":
            self.on_signal(signal.SIGHUP, None)
        self.done.append(step)
        return f"did {step}"

    def reload(self, why: str) -> str:
        self.done.append(f"reload ({why})")
        raise ZeroDivisionError("a reload's own bug")


def test_the_skeleton_survives_any_cycle_and_reload_and_warns_of_overruns(caplog: pytest.LogCaptureFixture) -> None:
    loop = Scripted(["ok", "raise", "slow", "hup", "ok"])
    with caplog.at_level(logging.INFO, logger="test.loop"):
        loop.loop()
    # the reload asked for by SIGHUP failed, and the same cycle's work still ran
    assert loop.done == ["ok", "slow", "hup", "reload (SIGHUP)", "ok"]
    assert loop.cycle_no == 5 and not loop.reload_requested
    sentences = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sentences == ["cycle 1: did ok", "cycle 2: cycle failed: boom", "cycle 3: did slow", "cycle 4: did hup",
                         "cycle 5: reload failed: a reload's own bug; did ok"]
    assert loop.overran.value == 1
    assert "cycle 3 took 12.0 s, longer than the 5.0 s cycle" in caplog.text
    assert caplog.text.count("Traceback") == 2, "unexpected exceptions are logged with their traceback"
