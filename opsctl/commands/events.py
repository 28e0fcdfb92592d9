"""``opsctl events``: the audit log."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output

HELP = """List the audit log: every change opsctl made, every daemon run and leader change.

Example: opsctl events --since 1h --action 'backup.*' -o json
"""


def events(
    since: str | None = typer.Option(None, "--since", help="only events newer than this (30s, 15m, 2h, 7d)"),
    action: str | None = typer.Option(None, "--action", help="action, e.g. scale.decide; * matches any text"),
    target: str | None = typer.Option(None, "--target", help="only events about this target"),
    limit: int = typer.Option(50, "--limit", min=1, max=100000, help="at most this many (the newest)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from datetime import UTC, datetime

    from core.errors import ConfigError
    from opsctl.context import connect_db, settings
    from opsctl.daemon.events import list_events
    from opsctl.output import emit
    from opsctl.policy import parse_duration

    try:
        window = parse_duration(since) if since is not None else None
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    with connect_db(settings()) as conn:
        rows = list_events(conn, now=datetime.now(UTC), since=window, action=action, target=target, limit=limit)
    if output is Output.table:
        for row in rows:
            row["change"] = f"{row['from'] or ''} → {row['to']}" if row["from"] or row["to"] else ""
        emit(rows, output, columns=[("at", "WHEN"), ("actor", "WHO"), ("action", "ACTION"), ("target", "TARGET"),
                                    ("change", "FROM → TO"), ("reason", "WHY")])
    else:
        emit(rows, output)
