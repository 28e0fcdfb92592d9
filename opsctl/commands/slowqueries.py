"""``opsctl slow-queries [threshold]``: the statements the database logged as slow, grouped; the threshold."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info

app = typer.Typer(help="Statements the database logged as slower than the policy's threshold, grouped by their "
                  "normalised text (literals and parameters as ?), with count, total, p95 and max time and the "
                  "companies they were for, by total time. Read through SQL (pg_ls_logdir, pg_read_file) from "
                  "the server's jsonlog files: docs/operations.md says what the server needs.\n\n"
                  "\b\nExample: opsctl slow-queries --since 1h\n"
                  "         opsctl slow-queries threshold --apply",
                  invoke_without_command=True, no_args_is_help=False)

COLUMNS = [("query", "QUERY"), ("count", "COUNT"), ("total_ms", "TOTAL MS"), ("p95_ms", "P95 MS"),
           ("max_ms", "MAX MS"), ("companies", "COMPANIES"), ("last_at", "LAST")]


@app.callback()
def slow_queries(
    ctx: typer.Context,
    since: str = typer.Option("1h", "--since", help="statements logged since this long ago (15m, 1h, 2d)"),
    top: int | None = typer.Option(None, "--top", min=1, help="only the first N groups"),
    max_mb: int = typer.Option(256, "--max-mb", min=1, help="read at most this much of the newest log"),
    output: Output = OUTPUT_OPTION,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    from core.clock import utcnow
    from core.errors import ConfigError
    from opsctl.context import connect_db, settings
    from opsctl.policy import window_start
    from opsctl.slowqueries.pg import slow_report

    try:
        start = window_start(since, utcnow())
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    with connect_db(settings()) as conn:
        rows = slow_report(conn, start, top=top, max_bytes=max_mb * 1024 * 1024)
    emit(rows, output, columns=COLUMNS)
    if output is Output.table and not rows:
        info(f"no statement over the threshold logged in the last {since}")


@app.command("threshold")
def threshold(
    apply: bool = typer.Option(False, "--apply", help="set it (default: show what would change)"),
    policy: Path | None = typer.Option(None, "--policy", help="policy file (default: <policy dir>/slow-queries.yaml)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Make the server log statements as the slow-queries policy says: log_min_duration_statement,
    log_parameter_max_length, log_timezone (ALTER SYSTEM, then pg_reload_conf(): no restart); audited.
    The daemon's slow-queries job does the same every minute.

    \b
    Example: opsctl slow-queries threshold            (the plan)
             opsctl slow-queries threshold --apply    (act)
    """
    from opsctl.audit import default_actor
    from opsctl.context import connect_db, settings
    from opsctl.slowqueries.pg import apply_threshold
    from opsctl.slowqueries.policy import load_policy

    chosen = load_policy(policy)
    with connect_db(settings()) as conn:
        planned = apply_threshold(conn, chosen, apply=apply, actor=default_actor())
    rows = [{"setting": c.name, "from": c.current, "to": c.wanted, "applied": apply} for c in planned.changes]
    if output is not Output.table:
        emit({"changes": rows, "log_readable": planned.readable, "why_unreadable": planned.why_unreadable,
              "sentence": planned.sentence(apply)}, output)
        return
    if rows:
        emit(rows, output, columns=[("setting", "SETTING"), ("from", "FROM"), ("to", "TO"), ("applied", "APPLIED")])
    info(planned.sentence(apply))
    if rows and not apply:
        info("dry run: nothing changed; run again with --apply")
