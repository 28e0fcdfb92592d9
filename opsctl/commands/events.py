"""``opsctl events``: the audit log."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output

HELP = """List the audit log: every change opsctl made (scaling, backups, rotations, reindexes, leader
changes, reloads). --all adds the routine records that changed nothing: scaling decisions that
kept the count or were dry runs, daemon job runs, recall measurements, refused reloads.

\b
Example: opsctl events --since 1h --action 'backup.*' -o json
         opsctl events --all --action daemon.job
"""


def events(
    since: str | None = typer.Option(None, "--since", help="only events newer than this (30s, 15m, 2h, 7d)"),
    action: str | None = typer.Option(None, "--action", help="action, e.g. scale.decide; * matches any text"),
    target: str | None = typer.Option(None, "--target", help="only events about this target"),
    limit: int = typer.Option(50, "--limit", min=1, max=100000, help="at most this many (the newest)"),
    everything: bool = typer.Option(False, "--all", help="also decisions and job runs that changed nothing"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from core.clock import utcnow
    from core.errors import ConfigError
    from opsctl.context import connect_db, settings
    from opsctl.daemon.events import hidden_decisions, list_events
    from opsctl.output import emit, info, plural
    from opsctl.policy import window_start

    now = utcnow()
    try:
        window = now - window_start(since, now) if since is not None else None
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    with connect_db(settings()) as conn:
        rows = list_events(conn, now=now, since=window, action=action, target=target, limit=limit,
                           everything=everything)
        hidden = 0 if everything else hidden_decisions(conn, now=now, since=window, action=action, target=target)
    if output is not Output.table:
        emit(rows, output)
    else:
        for row in rows:
            row["transition"] = f"{row['from'] or ''} → {row['to']}" if row["from"] or row["to"] else ""
        columns = [("id", "ID"), ("at", "WHEN"), ("actor", "WHO"), ("action", "ACTION"), ("target", "TARGET"),
                   ("transition", "FROM → TO"), ("reason", "WHY")]
        emit(rows, output, columns=[*columns, ("kind", "KIND")] if everything else columns)
    if hidden:
        info(f"{plural(hidden, 'decision or job run', 'decisions and job runs')} not shown: add --all")
