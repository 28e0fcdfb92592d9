"""``opsctl tenant create | update | list | rotate-key | usage``: companies, their tiers, API keys and
webhook secrets, and what each uses."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info, size

app = typer.Typer(help="Create and list companies, give them tiers; rotate their API keys.\n\n"
                  "Example: opsctl tenant create acme --tier premium", no_args_is_help=True)

TIER_HELP = "a tier of the tenants policy (<policy dir>/tenants.yaml; docs/tenants.md)"
POLICY_DIR_OPTION = typer.Option(None, "--policy-dir", help="where tenants.yaml is (default: $OPSCTL_POLICY_DIR, "
                                 "else ./policies)")


@app.command("create")
def create(name: str = typer.Argument(..., help="company name (unique)"),
           tier: str | None = typer.Option(None, "--tier", help=TIER_HELP + "; default: the policy's defaultTier"),
           policy_dir: Path | None = POLICY_DIR_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """Create a company and print its id, tier, API key and webhook secret (shown once).

    Example: opsctl tenant create acme --tier premium -o json
    """
    from core.tenants import create_company
    from opsctl.context import connect_db, settings
    from opsctl.tiers import checked_tier

    chosen = None if tier is None else checked_tier(tier, policy_dir)
    with connect_db(settings()) as conn:
        tenant = create_company(conn, name, tier=chosen)
    emit({"company_id": tenant.company_id, "name": tenant.name, "tier": chosen or "(default)",
          "api_key": tenant.api_key, "webhook_secret": tenant.webhook_secret}, output)
    if output is Output.table:
        info("the API key and webhook secret are shown once: store them now")


@app.command("update")
def update(
    company: str = typer.Argument(..., help="company id or name"),
    tier: str = typer.Option(..., "--tier", help=TIER_HELP),
    apply: bool = typer.Option(False, "--apply", help="make the change (default: show it)"),
    policy_dir: Path | None = POLICY_DIR_OPTION,
    output: Output = OUTPUT_OPTION,
) -> None:
    """Give a company another tier: its next request is limited by it; audited.

    Example: opsctl tenant update acme --tier premium --apply
    """
    from core.tenants import set_tier
    from opsctl.context import connect_db, settings
    from opsctl.tiers import checked_tier

    chosen = checked_tier(tier, policy_dir)
    with connect_db(settings()) as conn:
        change = set_tier(conn, company, chosen, apply=apply)
    emit({"company_id": change.company_id, "name": change.name, "from_tier": change.from_tier or "(default)",
          "to_tier": change.to_tier, "applied": change.applied}, output)
    if output is Output.table and not apply and change.from_tier != change.to_tier:
        info("dry run: nothing changed; run again with --apply")


@app.command("list")
def list_(output: Output = OUTPUT_OPTION) -> None:
    """List companies with their active keys and document counts.

    Example: opsctl tenant list -o yaml
    """
    from core.tenants import list_companies
    from opsctl.context import connect_db, settings

    with connect_db(settings()) as conn:
        rows = list_companies(conn)
    emit(rows, output, columns=[("id", "ID"), ("name", "NAME"), ("tier", "TIER"), ("active_keys", "KEYS"),
                                ("documents", "DOCUMENTS"), ("data_version", "DATA VERSION"),
                                ("created_at", "CREATED")])


@app.command("rotate-key")
def rotate_key(
    company: str = typer.Argument(..., help="company id or name"),
    keep_old: bool = typer.Option(False, "--keep-old", help="leave the existing keys valid"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """Issue a new API key and revoke the old ones (unless --keep-old); audited.

    Example: opsctl tenant rotate-key acme
    """
    from core.tenants import rotate_key as rotate
    from opsctl.context import connect_db, settings

    with connect_db(settings()) as conn:
        tenant = rotate(conn, company, keep_old=keep_old)
    emit({"company_id": tenant.company_id, "name": tenant.name, "api_key": tenant.api_key}, output)


USAGE_COLUMNS = [("name", "NAME"), ("tier", "TIER"), ("documents", "DOCUMENTS"), ("chunks", "CHUNKS"),
                 ("stored_bytes", "STORED"), ("searches", "SEARCHES"), ("cache_hit_rate", "CACHE HIT RATE"),
                 ("ingest_jobs", "INGEST JOBS"), ("embeddings", "EMBEDDINGS")]
SERIES_COLUMNS = [("start", "FROM"), ("searches", "SEARCHES"), ("cache_hit_rate", "CACHE HIT RATE"),
                  ("ingest_jobs", "INGEST JOBS"), ("embeddings", "EMBEDDINGS"), ("documents", "DOCUMENTS"),
                  ("chunks", "CHUNKS"), ("stored_bytes", "STORED")]


@app.command("usage")
def usage(
    company: str | None = typer.Argument(None, help="company id or name; omitted: every company, sorted by use"),
    since: str = typer.Option("7d", "--since", help="from this long ago (1h, 2d, 7d; whole UTC hours)"),
    every: str = typer.Option("1d", "--every", help="with COMPANY: one row per this step (1h, 6h, 1d)"),
    sort: str = typer.Option("activity", "--sort", help="without COMPANY: activity (searches + ingest jobs), "
                             "searches, ingest_jobs, embeddings, documents or stored_bytes"),
    top: int | None = typer.Option(None, "--top", min=1, help="without COMPANY: only the first N companies"),
    output: Output = OUTPUT_OPTION,
) -> None:
    """What companies use: documents, chunks and bytes stored now; searches, search cache hit rate,
    ingest jobs and texts embedded over the window (counted by the API and workers, flushed every
    usage_flush_seconds; docs/tenants.md).

    \b
    Example: opsctl tenant usage --since 7d --top 10
             opsctl tenant usage acme --since 2d --every 6h -o json
    """
    from core.clock import utcnow
    from core.errors import ConfigError
    from core.usage.recorder import usage_report
    from core.usage.tally import SORTS
    from opsctl.context import connect_db, settings
    from opsctl.policy import parse_duration, window_start

    try:
        start = window_start(since, utcnow())
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    try:
        step = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(f"--every: {exc}") from None
    if step.total_seconds() % 3600:
        raise ConfigError(f"--every {every}: usage is kept by the hour; use whole hours (1h, 6h, 1d)")
    if sort not in SORTS:
        raise ConfigError(f"--sort {sort}: one of {', '.join(SORTS)}")
    with connect_db(settings()) as conn:
        rows = usage_report(conn, company, start, step=step, sort=sort, top=top)
    if output is not Output.table:
        emit(rows, output)
        return
    shown = [{**r, "stored_bytes": size(r["stored_bytes"]),
              "cache_hit_rate": "" if r["cache_hit_rate"] is None else f"{r['cache_hit_rate']:.1%}"} for r in rows]
    emit(shown, output, columns=USAGE_COLUMNS if company is None else SERIES_COLUMNS)
    if not rows:
        info("no usage recorded in the window" if company is not None else "no companies")
