"""``opsctl tenant create | list | rotate-key``: companies, their API keys and webhook secrets."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, info

app = typer.Typer(help="Create and list companies; rotate their API keys.\n\nExample: opsctl tenant create acme",
                  no_args_is_help=True)


@app.command("create")
def create(name: str = typer.Argument(..., help="company name (unique)"), output: Output = OUTPUT_OPTION) -> None:
    """Create a company and print its id, API key and webhook secret (shown once).

    Example: opsctl tenant create acme -o json
    """
    from core.tenants import create_company
    from opsctl.context import connect_db, settings

    with connect_db(settings()) as conn:
        tenant = create_company(conn, name)
    emit({"company_id": tenant.company_id, "name": tenant.name, "api_key": tenant.api_key,
          "webhook_secret": tenant.webhook_secret}, output)
    if output is Output.table:
        info("the API key and webhook secret are shown once: store them now")


@app.command("list")
def list_(output: Output = OUTPUT_OPTION) -> None:
    """List companies with their active keys and document counts.

    Example: opsctl tenant list -o yaml
    """
    from core.tenants import list_companies
    from opsctl.context import connect_db, settings

    with connect_db(settings()) as conn:
        rows = list_companies(conn)
    emit(rows, output, columns=[("id", "ID"), ("name", "NAME"), ("active_keys", "KEYS"),
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
