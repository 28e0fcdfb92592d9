"""Decisions about child processes (pure; the caller passes the clock and the process table).

``next_restart``: when to start again a child that died, with exponential backoff. A child
that keeps dying right after it starts (Redis whose socket directory vanished, a worker that
cannot reach the database) is restarted after 1 s, 2 s, 4 s … up to ``max_delay``; one that
ran at least ``healthy_after`` seconds before dying counts as healthy again, so its next
death starts the sequence over. Used by ``opsctl up``'s supervisor and the local worker pool.

``plan_cleanup``: which processes a parent that died (``kill -9``) left behind, recognised by
(PID, creation time) so that a process that reused a PID is never signalled; what a child
started in its session must also carry the parent's data dir in its environment.

``exit_reason`` and ``one_line``: how a child's end is told, on one line (a log line, a status row).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    initial_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    healthy_after: float = 60.0  # a run at least this long resets the backoff

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.factor < 1 or self.max_delay < self.initial_delay or self.healthy_after < 0:
            raise ValueError(f"invalid restart policy: {self}")


@dataclass(frozen=True)
class Run:
    """One life of a child: from its start to its death (``started == ended``: it failed to start)."""

    started: float
    ended: float


@dataclass(frozen=True)
class RestartDecision:
    at: float  # on the caller's clock
    delay: float  # after the last death
    failures: int  # deaths in a row, each after a run shorter than ``healthy_after``
    reason: str  # one sentence, for the log


def next_restart(runs: Sequence[Run], now: float, policy: RestartPolicy = RestartPolicy()) -> RestartDecision:
    """When to restart a child whose lives (oldest first, the last one just ended) were ``runs``."""
    if not runs:
        return RestartDecision(now, 0.0, 0, "never ran: start now")
    failures = 0
    for run in reversed(runs):
        failures += 1
        if run.ended - run.started >= policy.healthy_after:
            break  # that run was healthy: count its death, and none before it
    delay = min(policy.max_delay, policy.initial_delay * policy.factor ** (failures - 1))
    at = runs[-1].ended + delay
    wait = max(0.0, at - now)
    when = "restart now" if wait == 0 else f"restart in {wait:.1f} s"
    return RestartDecision(at, delay, failures, when if failures == 1 else f"died {failures} times in a row: {when}")


# -- leftovers of a parent that died -----------------------------------------------------------------
DATA_DIR_ENV = "OPSCTL_DATA_DIR"  # every child of opsctl up, and what it starts, has its data dir here
SAME_START_SECONDS = 1.0  # creation times are seconds since the epoch derived from boot time: allow jitter


@dataclass(frozen=True)
class ProcessRow:
    """One live process, as the clean-up sees the process table."""

    pid: int
    sid: int  # session id: a child started with start_new_session leads its own
    created: float  # creation time, seconds since the epoch
    name: str
    cwd: str | None = None  # known only for the processes it was asked for
    data_dir: str | None = None  # DATA_DIR_ENV in its environment: read for the members of recorded sessions


@dataclass(frozen=True)
class Recorded:
    """A child that a parent recorded when it started it."""

    name: str
    pid: int
    created: float
    stop_signal: int = signal.SIGTERM
    whole_session: bool = True  # also stop what it started in its session (PostgreSQL stops its own)
    last: bool = False  # stop it after the others (PostgreSQL: they are its clients)


@dataclass(frozen=True)
class Stop:
    pid: int
    created: float
    signal: int
    what: str
    last: bool = False  # a server the others use (PostgreSQL): stopped after them


def same_start(a: float, b: float) -> bool:
    return abs(a - b) < SAME_START_SECONDS


def plan_cleanup(recorded: Sequence[Recorded], table: Sequence[ProcessRow], data_dir: str,
                 postmaster: tuple[int, str] | None = None) -> list[Stop]:
    """The processes left by a parent that died, to stop before starting again (pure).

    A recorded child is stopped only while its PID still names the process created at the
    recorded time. So is whatever it started in its own session (a daemon job's pg_basebackup),
    found by session id, created after it, and carrying ``data_dir`` (the parent's) in its
    environment: once the recorded child and its whole session are gone, its PID may be reused
    by a process that starts a session of its own, whose members carry no such mark.
    ``postmaster`` is (pid, data dir) from ``postmaster.pid``: a PostgreSQL server running on
    that data dir is stopped (fast shutdown) whoever started it. PostgreSQL goes last.
    """
    by_pid = {row.pid: row for row in table}
    stops: dict[int, Stop] = {}
    for child in recorded:
        leader = by_pid.get(child.pid)
        if leader is not None and not same_start(leader.created, child.created):
            continue  # the PID now belongs to another process: never touch it
        if leader is not None:
            stops[leader.pid] = Stop(leader.pid, leader.created, child.stop_signal, f"{child.name} (pid {leader.pid})",
                                     child.last)
        if child.whole_session:
            for row in table:
                if (row.sid == child.pid and row.pid != child.pid and row.created > child.created - SAME_START_SECONDS
                        and row.data_dir == data_dir):
                    stops.setdefault(row.pid, Stop(row.pid, row.created, signal.SIGTERM,
                                                   f"{row.name} (pid {row.pid}) started by {child.name}"))
    if postmaster is not None:
        pid, pg_dir = postmaster
        server = by_pid.get(pid)
        if server is not None and server.name in ("postgres", "postmaster") and server.cwd == pg_dir:
            stops[pid] = Stop(pid, server.created, signal.SIGINT, f"PostgreSQL (pid {pid}) on {pg_dir}", last=True)
    return sorted(stops.values(), key=lambda s: s.last)


def exit_reason(returncode: int | None) -> str:
    """``was killed by SIGKILL`` / ``exited with 1`` from a ``Popen.returncode``."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


def one_line(text: str, last: int | None = None) -> str:
    """``text`` on one line: its non-empty lines (the ``last`` ones only, if given) joined by `` | ``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-last:] if last else lines)
