"""``opsctl daemon``: the policy daemon (leader-elected scheduler of the jobs in schedule.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer

from opsctl.output import OUTPUT_OPTION, Output

HELP = """Run the jobs of policies/schedule.yaml (autoscale, backups, drills, partitions, index, cache).

Run as many replicas as you like: they elect a leader with a PostgreSQL advisory lock and only
the leader runs jobs. SIGHUP (or editing a policy file) reloads policies; an invalid file is
refused and the previous policies stay. A bad set at start is refused too, without exiting: the
daemon stays up, enforces nothing and does not lead (/readyz 503, opsctl_daemon_policies_loaded 0,
`opsctl status` says why) until the files are fixed, then loads them. --once exits 2 on a bad set.
SIGTERM/SIGINT stop after the running job finishes. Every run is recorded with the routine
decisions (`opsctl events --all --action daemon.job`), kept --keep-decisions; what a job changed
is an audit event (`opsctl events`).

Example: opsctl daemon --metrics-port 9464        (or, from cron: opsctl daemon --once backup-full)
"""


def daemon(
    policy_dir: Path | None = typer.Option(None, "--policy-dir", help="policy files (default: ./policies)",
                                           envvar="OPSCTL_POLICY_DIR"),
    metrics_port: int = typer.Option(9464, "--metrics-port", min=0, max=65535,
                                      help="serve /metrics on this port (0: off)", envvar="OPSCTL_DAEMON_METRICS_PORT"),
    metrics_host: str = typer.Option("0.0.0.0", "--metrics-host", help="address of the /metrics server"),
    once: str | None = typer.Option(None, "--once", metavar="JOB",
                                    help="run this one job now and exit (1 if it failed)"),
    cycle_seconds: float = typer.Option(5.0, "--cycle-seconds", min=0.1, max=300,
                                        help="how often the leader checks its lock and followers retry"),
    stop_grace_seconds: float = typer.Option(60.0, "--stop-grace-seconds", min=0,
                                             help="on SIGTERM, how long a running job may finish"),
    keep_decisions: str = typer.Option("35d", "--keep-decisions", envvar="OPSCTL_KEEP_DECISIONS",
                                       help="how long the leader keeps decisions and job runs (changes: forever; "
                                            "the newest of each action and target: too)"),
    output: Output = OUTPUT_OPTION,
) -> None:
    import logging
    import os
    import sys

    from core.errors import ConfigError
    from core.logs import configure_json
    from opsctl.context import settings
    from opsctl.daemon.retention import Retention
    from opsctl.daemon.runner import run_once
    from opsctl.daemon.service import Daemon, DaemonConfig
    from opsctl.output import emit
    from opsctl.policy import parse_duration
    from opsctl.policy import policy_dir as resolve_policy_dir

    current = settings()
    if current.log_format == "json":  # --debug included: every record as JSON, from DEBUG up
        debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        configure_json("daemon")
        if debug:
            logging.getLogger().setLevel(logging.DEBUG)
    elif not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # --debug: every library's lines
        # a line per job run, not one per scheduler tick or HTTP request (Prometheus, the scale target)
        for library in ("apscheduler", "httpx", "httpcore"):
            logging.getLogger(library).setLevel(logging.WARNING)
    directory = resolve_policy_dir(policy_dir)
    if once is not None:
        result = run_once(current, directory, once)
        emit(result.details(), output, columns=[("job", "JOB"), ("outcome", "OUTCOME"),
                                                ("duration_seconds", "SECONDS"),
                                                ("sentence" if result.outcome == "ok" else "error", "RESULT")])
        raise typer.Exit(0 if result.outcome == "ok" else 1)
    try:
        retention = Retention(decisions=parse_duration(keep_decisions))
    except ValueError as exc:
        raise ConfigError(f"--keep-decisions: {exc}") from None
    config = DaemonConfig(directory, cycle_seconds=cycle_seconds, stop_grace_seconds=stop_grace_seconds,
                          metrics_port=metrics_port, metrics_host=metrics_host, retention=retention)
    abandoned = Daemon(current, config).run()
    if abandoned:  # their threads cannot be stopped: leave without waiting for them
        logging.shutdown()
        sys.stderr.flush()
        os._exit(1)
