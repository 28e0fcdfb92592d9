"""``opsctl backup create|list|verify|prune``, ``opsctl restore-test`` and ``opsctl restore``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info, stderr_progress

app = typer.Typer(help="Back up the database into the repository, list, verify and prune backups.\n\n"
                       "Example: opsctl backup create --incremental", no_args_is_help=True)

POLICY_OPTION = typer.Option(None, "--policy", help="backup policy file (default: <policy dir>/backup.yaml)")


@contextmanager
def progress_bar() -> Iterator[Callable[[str, float | None], None]]:
    """A rich progress bar on stderr when it is a terminal (nothing in logs and pipes); the callback
    takes (step, fraction done, or None for a step that keeps the bar where it is)."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    with stderr_progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("starting", total=1.0)

        def update(step: str, fraction: float | None) -> None:
            bar.update(task, description=step, completed=fraction)  # None leaves the bar where it is

        yield update


def _ctx(policy: Path | None) -> tuple[Any, Any]:
    from opsctl.backup.service import policy_for
    from opsctl.context import settings

    return settings(), policy_for(policy)


BACKUP_COLUMNS = [("id", "ID"), ("type", "TYPE"), ("parent", "PARENT"), ("start_time", "START"),
                  ("stop_time", "STOP"), ("start_lsn", "START LSN"), ("stop_lsn", "STOP LSN"), ("size", "SIZE"),
                  ("repo", "REPO"), ("verified", "VERIFIED")]


VERIFY_COLUMNS = [("id", "ID"), ("ok", "OK"), ("files", "FILES"), ("bytes", "SIZE"), ("wal_segments", "WAL SEGMENTS"),
                  ("problems", "PROBLEMS")]


def _row(r: Any, policy: Any = None, repo: str | None = None) -> dict[str, Any]:
    """A backup as ``backup list`` shows it; REPO names the repositories holding a verified copy (or,
    listing a remote repository, that one)."""
    from opsctl.backup.catalog import megabytes
    from opsctl.backup.repos import row_repos

    data: dict[str, Any] = r.to_json()
    data.update(row_repos(r, policy) if policy is not None and repo is None else {"repo": repo, "repos": [repo]})
    data["size"] = megabytes(r.size_bytes)
    data["verified"] = f"{r.verified_at[:19]} {r.verify_result}" if r.verified_at else "never"
    data["start_time"], data["stop_time"] = r.start_time[:19], r.stop_time[:19]
    data["broken"] = None
    return data


def _broken_row(b: Any) -> dict[str, Any]:
    """A backup directory whose catalog entry cannot be read: listed, marked, never restored from."""
    return {"id": b.id, "type": None, "verified": f"BROKEN: unreadable catalog entry ({b.reason})",
            "broken": b.message}


@app.command("create")
def create(
    incremental: bool = typer.Option(False, "--incremental", help="incremental on the newest physical backup"),
    logical: bool = typer.Option(False, "--logical", help="pg_dump instead of a physical backup"),
    from_standby: bool | None = typer.Option(None, "--from-standby/--from-primary", show_default=False,
                                             help="stream the physical backup from the first read replica "
                                                  "(default: the policy's from_standby, else the primary)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Take a backup into the repository (physical full by default) and catalogue it.

    Example: opsctl backup create --incremental --from-standby
    """
    from opsctl.backup.service import create_backup

    s, pol = _ctx(policy)
    with progress_bar() as update:
        record = create_backup(s, pol, incremental=incremental, logical=True if logical else None,
                               from_standby=from_standby, progress=update)
    emit(_row(record, pol), output, columns=BACKUP_COLUMNS)


@app.command("push")
def push(
    backup_id: str | None = typer.Argument(None, help="backup id (copied again); default: every backup some "
                                                       "remote repository has no verified copy of"),
    repo: str | None = typer.Option(None, "--repo", help="only this remote repository"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Copy backups to the remote repositories (as `backup create` does after each backup): every file
    encoded per the repository, the manifest last, then checked there; exit 1 naming a failed copy.

    Example: opsctl backup push --repo offsite
    """
    from opsctl.backup.repos import push_missing

    s, pol = _ctx(policy)
    with progress_bar() as update:
        results = push_missing(s, pol, backup_id, repo, update)
    rows = [{"id": r.backup_id, "repo": r.repo, "ok": r.ok, "files": r.files, "plain_bytes": r.plain_bytes,
             "stored_bytes": r.stored_bytes, "seconds": round(r.seconds, 3), "problems": "; ".join(r.problems)}
            for r in results]
    emit(rows, output)
    if not results:
        info("every backup has a verified copy in every remote repository")
    bad = [r for r in results if not r.ok]
    if bad:
        from core.errors import OperationFailed

        raise OperationFailed(f"copy of {bad[0].backup_id} to {bad[0].repo} failed: {bad[0].problems[0]}")


@app.command("list")
def list_(
    repo: str | None = typer.Option(None, "--repo", help="list what this repository holds (a remote one is read "
                                                         "from the store); default: the local catalog"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """List the backups and the repositories holding each (read from the repositories alone).

    Example: opsctl backup list --repo offsite -o json
    """
    from opsctl.backup.repos import is_remote, list_in

    s, pol = _ctx(policy)
    records, broken = list_in(s, pol, repo)
    shown = repo if is_remote(pol, repo) else None
    emit([_row(r, pol, shown) for r in records] + [_broken_row(b) for b in broken], output, columns=BACKUP_COLUMNS)
    for b in broken:
        info(f"warning: {b.message}: `opsctl backup verify` fails until it is repaired or removed")


@app.command("verify")
def verify(
    backup_id: str | None = typer.Argument(None, help="backup id (with its chain); default: every backup"),
    repo: str | None = typer.Option(None, "--repo", help="verify the copies in this remote repository "
                                                         "(downloaded, decrypted, decompressed, checksummed)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Check every file against the manifest (size, SHA-256) and the WAL each backup needs; exit 1 naming
    the first bad file. With --repo, the copy that is in that repository, not the local one.

    Example: opsctl backup verify 20260101-120000F --repo offsite
    """
    from opsctl.backup.catalog import megabytes
    from opsctl.backup.repos import is_remote, verify_in
    from opsctl.backup.service import require_ok, verify_backups

    s, pol = _ctx(policy)
    if is_remote(pol, repo):
        assert repo is not None
        results = verify_in(s, pol, repo, backup_id)
    else:
        results = verify_backups(s, pol, backup_id)
    table = output is Output.table  # sizes for people, as `backup list` shows them; -o json/yaml keep the bytes
    rows = [{"id": r.backup_id, "ok": r.ok, "files": r.files, "bytes": megabytes(r.bytes) if table else r.bytes,
             "wal_segments": r.wal_segments, "problems": "; ".join(r.problems)} for r in results]
    emit(rows, output, columns=VERIFY_COLUMNS)
    require_ok(results)


@app.command("prune")
def prune(
    apply: bool = typer.Option(False, "--apply", help="remove what the plan says (default: show the plan)"),
    repo: str | None = typer.Option(None, "--repo", help="prune this repository by its own retention "
                                                         "(default: the local one)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Show what retention removes and keeps, and why; remove it with --apply. The local repository
    keeps every backup a remote repository has not verified a copy of (offsite_before_prune).

    Example: opsctl backup prune --repo offsite --apply
    """
    from opsctl.backup.repos import apply_prune_in, is_remote, plan_prune_in
    from opsctl.backup.service import apply_prune, plan_prune

    s, pol = _ctx(policy)
    remote = is_remote(pol, repo)
    plan = plan_prune_in(s, pol, repo) if remote and repo else plan_prune(s, pol)
    rows = [{"name": i.name, "kind": i.kind, "action": i.action, "reason": i.reason} for i in plan.backups]
    wal_gone = [i.name for i in plan.wal if i.action == "remove"]
    if wal_gone:
        span = wal_gone[0] if len(wal_gone) == 1 else f"{wal_gone[0]} … {wal_gone[-1]}"
        rows.append({"name": span, "kind": "wal", "action": "remove",
                     "reason": f"{len(wal_gone)} segment(s) before {plan.wal_cutoff}"})
    rows.append({"name": plan.wal_cutoff or "all", "kind": "wal", "action": "keep",
                 "reason": f"{len(plan.wal) - len(wal_gone)} file(s) kept"})
    emit(rows, output)
    if apply:
        if remote and repo:
            apply_prune_in(s, pol, repo, plan)
        else:
            apply_prune(s, pol, plan)
        info(plan.summary())
    else:
        info(plan.summary() + " (dry run: pass --apply to act)")


def _parse_time(value: str | None) -> Any:
    if value is None:
        return None
    from datetime import UTC, datetime

    from core.errors import ConfigError

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--target-time {value!r}: use ISO 8601, e.g. 2026-01-01T12:00:00+00:00") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


RESTORE_TEST_HELP = """Restore drill: restore a backup (+ WAL to --target-time) into a scratch server, prove the
point in time and check integrity, counts, checksums, vector indexes and recall, a search and a write;
report RTO and RPO against the policy. Exit 0 only when every check passed. The scratch server and
directory are always removed. With --repo NAME the backup and the WAL pushed there (opsctl wal push)
come from that remote repository alone (what a lost host would have), recovering to the last commit
pushed or to --target-time, with bytes/s per step.

Example: opsctl restore-test --repo offsite --target-time 2026-01-01T12:00:00Z -o json
"""


def restore_test(
    backup: str = typer.Option("latest", "--backup", help="backup id or latest"),
    target_time: str | None = typer.Option(None, "--target-time", help="recover to this time (ISO 8601)"),
    repo: str | None = typer.Option(None, "--repo", help="restore from this remote repository into a clean "
                                                         "scratch dir (download, decrypt, decompress first)"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    from core.errors import OperationFailed
    from core.humanize import format_bytes
    from opsctl.backup.drill import failure_reason, outcome_line, run_drill

    s, pol = _ctx(policy)
    with progress_bar() as update:
        report = run_drill(s, pol, backup_id=backup, target_time=_parse_time(target_time), progress=update,
                           repo_name=repo)
    if output is Output.table:
        if report["checks"]:  # a drill stopped before any check (no backup to restore) has no table
            point = f" to {report['recovered_point']}" if report["recovered_point"] else ""
            emit(report["checks"], output, columns=[("name", "CHECK"), ("passed", "PASSED"), ("figure", "FIGURE"),
                                                    ("detail", "DETAIL")],
                 title=f"restore drill of {report['backup']}{point}")
        for step, rate in (report.get("throughput") or {}).items():
            if step.endswith("_bytes_per_second") and rate:
                info(f"{step.removesuffix('_bytes_per_second')}: {format_bytes(rate)}/s")
        info(outcome_line(report))
    else:
        emit(report, output)
    if not report["passed"]:
        raise OperationFailed(f"restore drill failed: {failure_reason(report)}")


RESTORE_HELP = """Restore a backup (and WAL up to --target-time) into a new data directory for the on-call
engineer; prints the command that starts it. Asks first unless --yes.

Example: opsctl restore --backup 20260101-120000F --target-time 2026-01-02T09:30:00Z --to /srv/pg-restored
"""


def restore(
    backup: str = typer.Option(..., "--backup", help="backup id or latest"),
    to: Path = typer.Option(..., "--to", help="new data directory (must not exist or be empty)"),
    target_time: str | None = typer.Option(None, "--target-time", help="recover to this time (ISO 8601)"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    policy: Path | None = POLICY_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    from opsctl.backup.restore import restore_to

    s, pol = _ctx(policy)
    if not yes:
        typer.confirm(f"restore backup {backup} into {to}?", abort=True, err=True)
    with progress_bar() as update:
        result = restore_to(s, pol, backup_id=backup, target=to, target_time=_parse_time(target_time),
                            progress=update)
    emit(result, output)
    info(f"start it with:\n  {result['start_command']}")


def register(root: typer.Typer) -> None:
    """Add ``backup``, ``restore-test`` and ``restore`` to the root CLI."""
    root.add_typer(app, name="backup")
    root.command("restore-test", help=RESTORE_TEST_HELP)(restore_test)
    root.command("restore", help=RESTORE_HELP)(restore)
