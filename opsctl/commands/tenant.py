"""``opsctl tenant create | update | list | rotate-key``: companies, their tiers, API keys and webhook secrets."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info

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
