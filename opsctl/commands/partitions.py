"""``opsctl partitions list | rotate [--apply]``: partition rotation by the partitions policy."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info, stderr_progress

app = typer.Typer(help="Partitions of documents and chunks: list them, rotate them (premake, archive, drop).\n\n"
                       "Example: opsctl partitions rotate --apply", no_args_is_help=True)

POLICY_OPTION = typer.Option(None, "--policy", help="policy file (default: <policy dir>/partitions.yaml)")


@app.command("list")
def list_(policy: Path | None = POLICY_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """Partitions with range, rows, size, index state, retention.

    ROWS is counted for partitions up to 100,000 rows; a bigger one shows the planner's estimate,
    marked ~ (-o json: rows_exact false).

    Example: opsctl partitions list -o json
    """
    from datetime import UTC, datetime

    from opsctl.context import settings
    from opsctl.partitions.service import list_partitions, load_policy

    rows = list_partitions(settings(), load_policy(policy), datetime.now(UTC))
    if output is Output.table:
        rows = [{**r, "rows": f"{r['rows']:,}" if r["rows_exact"] else f"~{r['rows']:,}"} for r in rows]
    emit(rows, output, columns=[("table", "TABLE"), ("partition", "PARTITION"), ("range", "RANGE"),
                                ("rows", "ROWS"), ("size", "SIZE"), ("indexes", "INDEXES"),
                                ("retention", "RETENTION")])


@app.command("rotate")
def rotate(
    apply: bool = typer.Option(False, "--apply", help="act (default: print the plan only)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Plan the rotation (premake, move default rows, detach, archive, verify, drop); --apply runs it.

    Every step is audited and safe to run again after a crash.

    \b
    Example: opsctl partitions rotate            (the plan)
             opsctl partitions rotate --apply    (act)
    """
    from datetime import UTC, datetime

    from opsctl.context import settings
    from opsctl.partitions.service import load_policy, rotate

    pol = load_policy(policy)
    s = settings()
    if not apply:
        result = rotate(s, pol, datetime.now(UTC), apply=False)
    else:
        with stderr_progress() as bar:
            task = bar.add_task("rotating", total=None)

            def progress(step: object, phase: str) -> None:
                bar.update(task, description=f"{getattr(step, 'action', '')} {getattr(step, 'partition', '')}: "
                                             f"{phase}")
                if phase == "done":
                    bar.advance(task)

            result = rotate(s, pol, datetime.now(UTC), apply=True, progress=progress)
    rows = [{**step.as_dict(), "result": done} for step, done in
            zip(result.steps, result.done or [""] * len(result.steps), strict=True)]
    if output is Output.table and not rows:
        info(result.sentence())  # no empty table: one line
    elif output is Output.table:
        emit(rows, output, columns=[("action", "ACTION"), ("partition", "PARTITION"), ("start", "FROM"),
                                    ("end", "TO"), ("rows", "ROWS"), ("reason", "WHY"),
                                    *([("result", "RESULT")] if apply else [])],
             title="applied" if apply else "plan (dry run: add --apply to act)")
        info(result.sentence())
    else:
        emit({"applied": apply, "steps": rows, "summary": result.sentence()}, output)
