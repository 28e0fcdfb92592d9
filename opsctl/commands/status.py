"""``opsctl status``: one screen of the system's health."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output

HELP = """One screen: replicas vs desired, latency and errors, queue, cache, backups, drills,
partitions, index recall, the daemon's leader and its jobs, the children of `opsctl up` (state,
restarts), and what needs attention.

\b
Example: opsctl status --watch
         opsctl status -o json
"""


def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh live until Ctrl-C"),
    interval: float = typer.Option(2.0, "--interval", min=0.5, help="seconds between refreshes with --watch"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from datetime import UTC, datetime

    from opsctl.context import connect_db, settings
    from opsctl.daemon.status import read, render, summarize
    from opsctl.output import emit
    from opsctl.policy import policy_dir

    s = settings()

    def snapshot() -> dict[str, object]:
        now = datetime.now(UTC)
        with connect_db(s) as conn:
            raw = read(conn, s, policy_dir(), now)
        return summarize(raw, now)

    if output is not Output.table:
        emit(snapshot(), output)
        return
    from rich.console import Console

    console = Console()
    if not watch:
        console.print(render(snapshot()))
        return
    import time

    from rich.live import Live

    try:
        with Live(render(snapshot()), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot()), refresh=True)
    except KeyboardInterrupt:
        return
