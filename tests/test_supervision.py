"""The decisions about child processes, by table: when to restart one that died, and which processes a
dead ``opsctl up`` left behind (never one that merely reused a PID)."""

from __future__ import annotations

import signal

import pytest

from core.supervision import (
    ProcessRow,
    Recorded,
    RestartPolicy,
    Run,
    Stop,
    exit_reason,
    next_restart,
    one_line,
    plan_cleanup,
)

POLICY = RestartPolicy(initial_delay=1.0, factor=2.0, max_delay=60.0, healthy_after=60.0)


def short(end: float, lived: float = 0.5) -> Run:
    return Run(end - lived, end)


@pytest.mark.parametrize(("runs", "now", "at", "delay", "failures", "reason"), [
    # never ran: start now
    ([], 100.0, 100.0, 0.0, 0, "never ran: start now"),
    # a first death: 1 s after it
    ([Run(0.0, 10.0)], 10.0, 11.0, 1.0, 1, "restart in 1.0 s"),
    # the clock already passed the restart time: now
    ([Run(0.0, 10.0)], 15.0, 11.0, 1.0, 1, "restart now"),
    # dying again and again right after each start: 1, 2, 4, 8 s …
    ([short(10), short(12)], 12.0, 14.0, 2.0, 2, "died 2 times in a row: restart in 2.0 s"),
    ([short(10), short(12), short(15), short(20)], 20.0, 28.0, 8.0, 4,
     "died 4 times in a row: restart in 8.0 s"),
    # … never beyond max_delay
    ([short(float(t)) for t in range(1, 12)], 11.0, 71.0, 60.0, 11,
     "died 11 times in a row: restart in 60.0 s"),
    # a run of at least healthy_after seconds resets the sequence: its own death counts as the first
    ([short(10), short(12), short(15), Run(20.0, 80.0)], 80.0, 81.0, 1.0, 1, "restart in 1.0 s"),
    # and the deaths after it count from there
    ([short(10), short(12), Run(20.0, 80.0), short(82)], 82.0, 84.0, 2.0, 2,
     "died 2 times in a row: restart in 2.0 s"),
    # 59.9 s is not healthy yet
    ([short(10), Run(20.0, 79.9)], 79.9, 81.9, 2.0, 2, "died 2 times in a row: restart in 2.0 s"),
])
def test_next_restart(runs: list[Run], now: float, at: float, delay: float, failures: int, reason: str) -> None:
    decision = next_restart(runs, now, POLICY)
    assert (decision.delay, decision.failures, decision.reason) == (delay, failures, reason)
    assert decision.at == pytest.approx(at)


@pytest.mark.parametrize("bad", [dict(initial_delay=-1), dict(factor=0.5), dict(max_delay=0.5), dict(healthy_after=-1)])
def test_an_invalid_restart_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid restart policy"):
        RestartPolicy(**bad)


@pytest.mark.parametrize(("code", "text"), [
    (None, "is still running"), (0, "exited with 0"), (1, "exited with 1"), (-9, "was killed by SIGKILL"),
    (-15, "was killed by SIGTERM"), (-200, "was killed by signal 200")])
def test_exit_reason(code: int | None, text: str) -> None:
    assert exit_reason(code) == text


T = 1_700_000_000.0  # creation times
DATA_DIR = "/data"
PG_DIR = "/data/pg"
DAEMON = Recorded("daemon", 100, T)
REDIS = Recorded("redis", 200, T + 1)
POSTGRES = Recorded("postgres", 300, T, signal.SIGINT, whole_session=False, last=True)


def row(pid: int, created: float, sid: int | None = None, name: str = "python3", cwd: str | None = None,
        data_dir: str | None = DATA_DIR) -> ProcessRow:
    return ProcessRow(pid, pid if sid is None else sid, created, name, cwd, data_dir)


@pytest.mark.parametrize(("recorded", "table", "postmaster", "expected"), [
    # nothing recorded, nothing running: nothing to do
    ([], [row(1, T - 1e6, name="init")], None, []),
    # every recorded child died with its parent: nothing to do
    ([DAEMON, REDIS, POSTGRES], [row(1, T - 1e6, name="init")], None, []),
    # a survivor with its recorded PID and creation time: stopped with its signal
    ([REDIS], [row(200, T + 1, name="redis-server")], None,
     [Stop(200, T + 1, signal.SIGTERM, "redis (pid 200)")]),
    # creation times read by two processes may differ by rounding: still the same process
    ([REDIS], [row(200, T + 1.4, name="redis-server")], None,
     [Stop(200, T + 1.4, signal.SIGTERM, "redis (pid 200)")]),
    # the PID now belongs to a newer process: never touched (nor its session)
    ([REDIS], [row(200, T + 500, name="vim"), row(201, T + 501, sid=200, name="sh")], None, []),
    # the daemon died, the pg_basebackup its job started lives on in its session: stopped
    ([DAEMON], [row(150, T + 30, sid=100, name="pg_basebackup")], None,
     [Stop(150, T + 30, signal.SIGTERM, "pg_basebackup (pid 150) started by daemon")]),
    # the daemon and its job both alive: both
    ([DAEMON], [row(100, T), row(150, T + 30, sid=100, name="pg_basebackup")], None,
     [Stop(100, T, signal.SIGTERM, "daemon (pid 100)"),
      Stop(150, T + 30, signal.SIGTERM, "pg_basebackup (pid 150) started by daemon")]),
    # a process in that session created before the daemon cannot be its job
    ([DAEMON], [row(150, T - 30, sid=100)], None, []),
    # the daemon and its session are gone, its PID was reused by a process that started a session (setsid)
    # and died, leaving its own children in that session: they carry another data dir, or none
    ([DAEMON], [row(150, T + 30, sid=100, name="sleep", data_dir="/elsewhere"),
                row(151, T + 31, sid=100, name="sleep", data_dir=None)], None, []),
    # PostgreSQL: only the postmaster (it stops its backends), with a fast shutdown, after the others
    ([POSTGRES, REDIS], [row(300, T, name="postgres"), row(301, T + 2, sid=300, name="postgres"),
                         row(200, T + 1, name="redis-server")], None,
     [Stop(200, T + 1, signal.SIGTERM, "redis (pid 200)"),
      Stop(300, T, signal.SIGINT, "postgres (pid 300)", last=True)]),
    # a postmaster on our data dir that nobody recorded (started by hand, or by an older opsctl up)
    ([], [row(400, T, name="postgres", cwd=PG_DIR)], (400, PG_DIR),
     [Stop(400, T, signal.SIGINT, f"PostgreSQL (pid 400) on {PG_DIR}", last=True)]),
    # postmaster.pid names a PID that is now something else, or a postgres on another data dir: left alone
    ([], [row(400, T, name="bash", cwd=PG_DIR)], (400, PG_DIR), []),
    ([], [row(400, T, name="postgres", cwd="/other/pg")], (400, PG_DIR), []),
    ([], [row(400, T, name="postgres", cwd=None)], (400, PG_DIR), []),
    # recorded and in postmaster.pid: stopped once
    ([POSTGRES], [row(300, T, name="postgres", cwd=PG_DIR)], (300, PG_DIR),
     [Stop(300, T, signal.SIGINT, f"PostgreSQL (pid 300) on {PG_DIR}", last=True)]),
])
def test_plan_cleanup(recorded: list[Recorded], table: list[ProcessRow], postmaster: tuple[int, str] | None,
                      expected: list[Stop]) -> None:
    assert plan_cleanup(recorded, table, DATA_DIR, postmaster) == expected


@pytest.mark.parametrize(("text", "last", "line"), [
    ("", None, ""),
    ("one", None, "one"),
    ("PostgreSQL exited with 1:\n  LOG: a\n\n FATAL: b \n", None, "PostgreSQL exited with 1: | LOG: a | FATAL: b"),
    ("a\nb\nc\nd\n\n", 3, "b | c | d"),
    ("a\nb", 3, "a | b"),
])
def test_one_line(text: str, last: int | None, line: str) -> None:
    assert one_line(text, last) == line
