"""``opsctl up``: start the whole system on this machine."""

from __future__ import annotations

from typing import Any

import typer

HELP = """Start PostgreSQL, Redis, Prometheus, the core API, its ingest workers and the policy daemon;
Ctrl-C stops all, and the last line says whether everything exited cleanly.

Uses OPSCTL_DATABASE_URL / OPSCTL_REDIS_URL / OPSCTL_PROMETHEUS_URL instead of starting its own
servers when they are set. Running it again resumes on the same data, and with as many workers as
the autoscaler last left (when that was in the last 24 h and within the policy's min/max; else 2):
--workers chooses. One per data dir: a second one is refused. A child that dies is restarted (see
`opsctl status`); if `opsctl up` itself is killed, its children stop with it. From make, pass
options as ARGS: make up ARGS="--port 8081 --prometheus-port 9091". A Prometheus port in use is
replaced by a free one (said on start); an API port in use is an error. --replicas N starts N
streaming standbys of the embedded PostgreSQL (<data dir>/replica-K) that searches read from while
they keep up (docs/replicas.md).

Example: opsctl up --workers 4 --port 8080 --replicas 1
"""


def up(
    port: int = typer.Option(8080, "--port", help="API port", envvar="OPSCTL_PORT"),
    workers: int | None = typer.Option(None, "--workers", min=0, max=64, show_default=False,
                                       help="ingest worker processes (default: the autoscaler's last count, else 2)"),
    prometheus_port: int = typer.Option(9090, "--prometheus-port", envvar="OPSCTL_PROMETHEUS_PORT",
                                        help="port of the embedded Prometheus (a free one if it is in use)"),
    no_prometheus: bool = typer.Option(False, "--no-prometheus", help="do not start Prometheus"),
    no_daemon: bool = typer.Option(False, "--no-daemon", help="do not start the policy daemon (opsctl daemon)"),
    replicas: int | None = typer.Option(None, "--replicas", min=0, max=8, show_default=False,
                                        help="streaming standbys of the embedded PostgreSQL that searches read "
                                             "from (default: the setting `replicas`, OPSCTL_REPLICAS, else 0)"),
) -> None:
    from rich.console import Console

    from opsctl.context import settings
    from opsctl.up.system import System
    from opsctl.up.terminal import setup_logging

    console = Console(stderr=True, soft_wrap=True)
    own = settings(with_state=False, port=port)
    system = System(own, workers=workers, port=port, prometheus_port=prometheus_port,
                    with_prometheus=not no_prometheus, with_daemon=not no_daemon,
                    replicas=own.replicas if replicas is None else replicas)
    setup_logging(system.data_dir / "logs" / "up.log", system.settings.log_format)
    try:
        with console.status("starting…") as status:
            system.start(progress=lambda text: status.update(text + "…"))
    except BaseException:
        system.stop()
        raise
    system.serve(on_serving=lambda: _print_banner(system))  # once the API listens: its lines work at once


def _print_banner(system: Any) -> None:
    """The endpoints and how to try them, on stderr, best-effort (nobody may read it any more)."""
    import sys

    from opsctl.up.banner import banner
    from opsctl.up.terminal import say

    rows = {**system.endpoints, "data dir": str(system.data_dir),
            "workers": f"{system.workers} ({system.workers_why})"}
    activate = f"{sys.prefix}/bin/activate" if sys.prefix != sys.base_prefix else None
    say("\n".join(banner(rows, system.notes, system.endpoints["api"], activate)))
