"""What `opsctl status` says about `opsctl up`'s children, by table (pure: the observed up.json and the clock)."""

from __future__ import annotations

import ast
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from opsctl.up.health import render_up, summarize_up
from tests.conftest import project_root

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def at(delta: timedelta) -> str:
    return (NOW + delta).isoformat(timespec="seconds")


def child(name: str, state: str = "running", pids: tuple[int, ...] = (10,), alive: bool = True, restarts: int = 0,
          last_exit: str | None = None, last_exit_at: str | None = None, next_restart_at: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": state, "processes": [{"pid": p, "created": 1.0, "alive": alive} for p in pids],
            "restarts": restarts, "last_exit": last_exit, "last_exit_at": last_exit_at,
            "next_restart_at": next_restart_at, **extra}


def observed(*children: dict[str, Any], alive: bool = True, stopped_at: str | None = None) -> dict[str, Any]:
    return {"pid": 9, "created": 1.0, "alive": alive, "started_at": at(-timedelta(hours=2)), "stopped_at": stopped_at,
            "children": list(children)}


KILLED = "pid 10 was killed by SIGKILL after 3.0 s"


@pytest.mark.parametrize(("up", "states", "attention"), [
    # no opsctl up on this data dir (production, or never started): nothing said
    (None, None, []),
    # all running, never restarted
    (observed(child("postgres"), child("redis"), child("worker", pids=(11, 12), desired=2, running=2)),
     {"postgres": "running", "redis": "running", "worker": "running"}, []),
    # down, waiting for its next restart
    (observed(child("redis", "down", pids=(), restarts=2, last_exit=KILLED, last_exit_at=at(-timedelta(seconds=5)),
                    next_restart_at=at(timedelta(seconds=4)))),
     {"redis": "down"}, [f"redis is down: {KILLED}; next restart in 4 s"]),
    # restarted recently: said, with how it last died
    (observed(child("redis", restarts=2, last_exit=KILLED, last_exit_at=at(-timedelta(minutes=10)))),
     {"redis": "running"}, [f"redis was restarted 2 times; the last time 10.0m ago: {KILLED}"]),
    (observed(child("daemon", restarts=1, last_exit="pid 3 exited with 1 after 0.4 s",
                    last_exit_at=at(-timedelta(seconds=30)))),
     {"daemon": "running"}, ["daemon was restarted 1 time; the last time 30s ago: pid 3 exited with 1 after 0.4 s"]),
    # restarted long ago: shown in the table, not in attention
    (observed(child("redis", restarts=1, last_exit=KILLED, last_exit_at=at(-timedelta(hours=2)))),
     {"redis": "running"}, []),
    # workers: fewer running than desired
    (observed(child("worker", "degraded", pids=(11,), desired=2, running=1, restarts=1, last_exit=KILLED,
                    last_exit_at=at(-timedelta(seconds=2)))),
     {"worker": "degraded"}, [f"worker is degraded (1/2 running): {KILLED}"]),
    # opsctl up was killed and some of its processes survive
    (observed(child("postgres", pids=(10,)), child("daemon", pids=(20,), alive=False), alive=False),
     {"postgres": "orphaned", "daemon": "gone"},
     ["opsctl up (pid 9) is gone without stopping: 1 of its processes still run (pids 10); the next `opsctl up` "
      "stops them"]),
    # … or none does
    (observed(child("postgres", alive=False), alive=False), {"postgres": "gone"},
     ["opsctl up (pid 9) is gone without stopping: its children stopped with it; run `opsctl up` again"]),
    # stopped cleanly: nothing to say
    (observed(child("postgres", "stopped", pids=()), alive=False, stopped_at=at(-timedelta(hours=1))),
     {"postgres": "stopped"}, []),
])
def test_summarize_up(up: dict[str, Any] | None, states: dict[str, str] | None, attention: list[str]) -> None:
    summary, said = summarize_up(up, NOW)
    assert said == attention
    if states is None:
        assert summary is None
        return
    assert summary is not None
    assert {row["child"]: row["state"] for row in summary["children"]} == states
    json.dumps(summary)  # `opsctl status -o json` prints it
    console = Console(width=200, record=True)
    console.print(render_up(summary))
    text = " ".join(console.export_text().split())  # the title wraps at the table's width
    assert up is not None
    title = "running" if up["alive"] else f"stopped at {up['stopped_at']}" if up["stopped_at"] else "GONE"
    assert f"opsctl up: pid 9, {title}" in text
    for name, state in states.items():
        assert name in text and state in text


def reads_nothing(path: Path, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether the module at ``path`` imports nothing but the standard library (minus its I/O) and
    ``allowed``: an import inside a function included, which tests/test_architecture.py (importing the
    module and looking at sys.modules) does not see."""
    tree = ast.parse(path.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return imported - {"__future__", *allowed} <= sys.stdlib_module_names - {"os", "pathlib", "subprocess", "socket"}


def test_health_reads_nothing_not_even_inside_a_function() -> None:
    # observe (reading up.json and the process table) lives in opsctl.up.record
    assert reads_nothing(project_root() / "opsctl" / "up" / "health.py", frozenset({"rich"}))
