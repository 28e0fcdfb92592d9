"""Who this replica is after a cycle's look at the leader lock: a pure decision, tested by table.

The adapter (:meth:`opsctl.daemon.leader.LeaderLock.check`) looks once — a leader verifies its
lock, a follower tries to take it and, having won, reads the runs already claimed — and reports a
:class:`LockCheck`. :func:`decide_role` turns that, what this replica was, the schedule and the
clock into a :class:`Role`: lead or follow, the transition to audit, the runs to catch up on,
whether to let go of a lock it cannot use, and the cycle's sentence. Pure: no I/O, clock passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from opsctl.daemon.schedule import JobSpec, due_jobs, next_fire_time


@dataclass(frozen=True)
class LockCheck:
    """What one look at the leader lock found."""

    held: bool  # the lock is ours after the look (verified, or just taken)
    error: str | None = None  # PostgreSQL unreachable (not held), or past runs unreadable (held)
    holder: str | None = None  # who leads instead, when known
    last_runs: Mapping[str, datetime] | None = None  # after taking the lock: latest claimed run per job


@dataclass(frozen=True)
class Role:
    leading: bool
    transition: Literal["acquired", "lost"] | None
    sentence: str
    catch_up: dict[str, datetime] = field(default_factory=dict)
    release: bool = False  # took the lock but cannot use it: let go, retry next cycle


def next_runs(specs: Mapping[str, JobSpec], now: datetime) -> str:
    """``8 jobs scheduled, next autoscale in 12 s``."""
    upcoming = sorted(((next_fire_time(spec.trigger, now), name) for name, spec in specs.items()),
                      key=lambda item: (item[0] is None, item[0] or now))
    if not upcoming or upcoming[0][0] is None:
        return "no jobs scheduled"
    at, name = upcoming[0]
    assert at is not None
    return f"{len(specs)} jobs scheduled, next {name} in {max(0.0, (at - now).total_seconds()):.0f} s"


def decide_role(was_leading: bool, check: LockCheck, specs: Mapping[str, JobSpec], now: datetime,
                running: Sequence[str] = ()) -> Role:
    """Lead or follow after ``check``; the transition, catch-up runs and sentence (pure)."""
    busy = ", ".join(sorted(running))
    if was_leading:
        if check.held:
            return Role(True, None, f"leader: {next_runs(specs, now)}" + (f"; running {busy}" if busy else ""))
        return Role(False, "lost", "lost leadership: the lock's connection failed; no job starts here until the "
                                   "lock is retaken" + (f" ({busy} still finishing)" if busy else ""))
    if not check.held:
        if check.error is not None:
            return Role(False, None, f"follower: cannot reach PostgreSQL ({check.error}); retrying")
        return Role(False, None, f"follower: {check.holder or 'another replica'} leads")
    if check.last_runs is None:  # without them no catch-up is possible
        return Role(False, None, f"follower: cannot read past runs ({check.error or 'no answer'}); retrying",
                    release=True)
    due = due_jobs(specs, check.last_runs, now)
    caught = f"; catching up on {', '.join(sorted(due))}" if due else ""
    return Role(True, "acquired", f"became leader: {len(specs)} jobs scheduled{caught}", catch_up=due)
