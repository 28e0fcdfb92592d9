"""What ``opsctl status`` shows about ``opsctl up`` and its children (pure).

``opsctl.up.record.observe`` (the adapter) reads ``up.json`` and checks which of the recorded
processes still live; ``summarize_up`` (that and the clock in) makes the rows and the attention
lines; ``render_up`` draws the table.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

RECENT = timedelta(hours=1)  # a restart this recent is worth a line in "attention"


def _at(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def _ago(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ago"
    return f"{max(0.0, seconds):.0f}s ago"


def summarize_up(observed: dict[str, Any] | None, now: datetime) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``up`` part of the status screen and its attention lines (pure)."""
    if not observed:
        return None, []
    attention: list[str] = []
    running = bool(observed.get("alive"))
    rows = []
    for child in observed.get("children", []):
        name = child.get("name")
        pids = [p["pid"] for p in child["processes"] if p["alive"]]
        state = child.get("state")
        if not running and state != "stopped":
            state = "orphaned" if pids else "gone"
        restarts = int(child.get("restarts") or 0)
        last_exit, last_exit_at = child.get("last_exit"), _at(child.get("last_exit_at"))
        row = {"child": name, "state": state, "pids": pids, "restarts": restarts, "last_exit": last_exit,
               "last_exit_at": child.get("last_exit_at"), "next_restart_at": child.get("next_restart_at")}
        if "desired" in child:
            row.update(running=child.get("running"), desired=child.get("desired"))
        rows.append(row)
        if not running:
            continue
        if state in ("down", "degraded", "restarting"):
            next_at = _at(child.get("next_restart_at"))
            when = f"; next restart in {max(0.0, (next_at - now).total_seconds()):.0f} s" if next_at else ""
            count = f" ({row['running']}/{row['desired']} running)" if "desired" in row else ""
            attention.append(f"{name} is {state}{count}: {last_exit or 'not running'}{when}")
        elif restarts and last_exit_at is not None and now - last_exit_at < RECENT:
            attention.append(f"{name} was restarted {restarts} time{'s' if restarts > 1 else ''}; the last time "
                             f"{_ago((now - last_exit_at).total_seconds())}: {last_exit}")
    pid = observed.get("pid")
    if not running and not observed.get("stopped_at"):
        left = [p for row in rows for p in row["pids"]]
        attention.append(f"opsctl up (pid {pid}) is gone without stopping: " + (
            f"{len(left)} of its processes still run (pids {', '.join(map(str, left))}); the next `opsctl up` "
            "stops them" if left else "its children stopped with it; run `opsctl up` again"))
    return {"pid": pid, "running": running, "started_at": observed.get("started_at"),
            "stopped_at": observed.get("stopped_at"), "children": rows}, attention


def render_up(up: dict[str, Any]) -> Any:
    """The children table of ``opsctl status``."""
    from rich.table import Table
    from rich.text import Text

    title = f"opsctl up: pid {up['pid']}, " + ("running" if up["running"] else
                                              f"stopped at {up['stopped_at']}" if up["stopped_at"] else "GONE")
    table = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for col in ("CHILD", "STATE", "PIDS", "RESTARTS", "LAST EXIT"):
        table.add_column(col)
    for row in up["children"]:
        state = str(row["state"])
        if "desired" in row and state != "stopped":
            state += f" {row['running']}/{row['desired']}"
        style = "" if row["state"] in ("running", "stopped") else "red"
        last = f"{row['last_exit']} at {row['last_exit_at']}" if row["last_exit"] else "-"
        table.add_row(str(row["child"]), Text(state, style=style), " ".join(map(str, row["pids"])) or "-",
                      str(row["restarts"]), last)
    return table
