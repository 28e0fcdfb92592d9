"""``opsctl up``: start the whole system on this machine."""

from __future__ import annotations

from typing import Any

import typer

HELP = """Start PostgreSQL, Redis, Prometheus, the core API, its ingest workers and the policy daemon;
Ctrl-C stops all.

Uses OPSCTL_DATABASE_URL / OPSCTL_REDIS_URL / OPSCTL_PROMETHEUS_URL instead of starting its own
servers when they are set. Running it again resumes on the same data. One per data dir: a
second one is refused. A child that dies is restarted (see `opsctl status`); if `opsctl up`
itself is killed, its children stop with it.

Example: opsctl up --workers 4 --port 8080
"""


def up(
    port: int = typer.Option(8080, "--port", help="API port", envvar="OPSCTL_PORT"),
    workers: int = typer.Option(2, "--workers", min=0, max=64, help="ingest worker processes"),
    prometheus_port: int = typer.Option(9090, "--prometheus-port", help="port of the embedded Prometheus"),
    no_prometheus: bool = typer.Option(False, "--no-prometheus", help="do not start Prometheus"),
    no_daemon: bool = typer.Option(False, "--no-daemon", help="do not start the policy daemon (opsctl daemon)"),
) -> None:
    from rich.console import Console

    from opsctl.context import settings
    from opsctl.up.system import System
    from opsctl.up.terminal import setup_logging, silence

    console = Console(stderr=True, soft_wrap=True)
    system = System(settings(with_state=False, port=port), workers=workers, port=port, prometheus_port=prometheus_port,
                    with_prometheus=not no_prometheus, with_daemon=not no_daemon)
    setup_logging(system.data_dir / "logs" / "up.log")
    try:
        with console.status("starting…") as status:
            system.start(progress=lambda text: status.update(text + "…"))
    except BaseException:
        system.stop()
        raise
    try:
        _print_endpoints(console, system)
    except (OSError, ValueError):  # nobody reads our output any more: serve anyway
        silence()
    system.serve()


def _print_endpoints(console: Any, system: Any) -> None:
    from rich.table import Table

    table = Table(title="opsctl is up", show_edge=False, header_style="bold")
    table.add_column("ENDPOINT")
    table.add_column("URL", overflow="fold")
    for name, url in system.endpoints.items():
        table.add_row(name, url)
    table.add_row("data dir", str(system.data_dir))
    console.print(table)
    api = system.endpoints["api"]
    console.print(
        "\nIn another terminal:\n"
        "  KEY=$(opsctl tenant create demo -o json \\\n"
        "        | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"api_key\"])')\n"
        f"  curl -s -X POST {api}/v1/documents -H \"Authorization: Bearer $KEY\" \\\n"
        "       -d '{\"documents\": [{\"external_id\": \"hello\", \"text\": \"Hello from opsctl\"}]}'\n"
        f"  curl -s -X POST {api}/v1/search -H \"Authorization: Bearer $KEY\" -d '{{\"query\": \"hello\"}}'\n"
        "\nCtrl-C stops everything (a second Ctrl-C forces).",
        highlight=False, markup=False,
    )
