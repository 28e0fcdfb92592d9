"""``opsctl wal push|status|fetch``: WAL from the local spool to the remote repositories, and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from opsctl.output import OUTPUT_OPTION, Output

app = typer.Typer(help="Ship archived WAL off the host (push lag = RPO) and fetch it back for restores.\n\n"
                       "Example: opsctl wal status", no_args_is_help=True)

POLICY_OPTION = typer.Option(None, "--policy", help="backup policy file (default: <policy dir>/backup.yaml)")
STATUS_COLUMNS = [("repo", "REPOSITORY"), ("waiting", "WAITING"), ("lag_seconds", "LAG S"), ("oldest", "OLDEST"),
                  ("verified", "VERIFIED"), ("spool", "SPOOL")]


def _setup(policy: Path | None) -> tuple[Any, Any]:
    from opsctl.backup.service import policy_for
    from opsctl.context import settings

    return settings().data_dir.resolve(), policy_for(policy)


@app.command("push")
def push(
    loop: bool = typer.Option(False, "--loop", help="keep pushing until SIGTERM/SIGINT (what `opsctl up` runs)"),
    once: bool = typer.Option(False, "--once", help="one cycle, then exit (the default): 1 if an upload failed"),
    parallel: int = typer.Option(4, "--parallel", min=1, max=64, help="uploads at once"),
    interval: float = typer.Option(2.0, "--interval", min=0.1, max=600, help="--loop: seconds between idle cycles"),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="--loop: serve /metrics on this port (0: off)"),
    metrics_host: str = typer.Option("127.0.0.1", "--metrics-host", help="address of the /metrics server"),
    policy: Path | None = POLICY_OPTION,
) -> None:
    """Upload the WAL in the spool to every remote repository, verify each copy, and let go of
    what every repository holds (spool alone) or leave it to the local repository's prune.

    Each file is compressed/encrypted as its repository says, uploaded, and counted as pushed only
    once the store reports the size uploaded. The metrics (opsctl_wal_push_lag_seconds …) are
    written to <data dir>/metrics/opsctl_wal_push.prom after every cycle.

    Example: opsctl wal push --once
    """
    import logging
    import signal
    import sys
    import threading

    from core.errors import ConfigError, OperationFailed
    from opsctl.backup.walmetrics import PushMetrics, textfile
    from opsctl.backup.walpush import pusher_for

    if loop and once:
        raise ConfigError("--loop and --once exclude each other")
    data_dir, pol = _setup(policy)
    metrics = PushMetrics(textfile(data_dir), pol.wal_push.max_lag_seconds)
    pusher = pusher_for(data_dir, pol, parallel=parallel, metrics=metrics)
    if not loop:
        sentence = pusher.cycle()
        print(sentence)
        failed = [f"{name}: {s.last_error}" for name, s in pusher.states.items() if s.last_error]
        if failed:
            raise OperationFailed(f"WAL push failed ({'; '.join(failed)})")
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        metrics.serve(metrics_port, metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pusher.loop(stop, interval)


@app.command("status")
def status(policy: Path | None = POLICY_OPTION, output: Output = OUTPUT_OPTION) -> None:
    """Per remote repository: the WAL files waiting in the spool, the push lag (age of the oldest
    one: the RPO if the host is lost now) and how many it holds verified. Reads local state only.

    Example: opsctl wal status -o json
    """
    from opsctl.backup.walpush import pusher_for
    from opsctl.output import emit

    data_dir, pol = _setup(policy)
    pusher = pusher_for(data_dir, pol)
    plan = pusher.plan()
    rows = [{"repo": r.repo, "waiting": r.waiting, "lag_seconds": round(r.lag_seconds, 1), "oldest": r.oldest,
             "verified": len(pusher.marks[r.repo].names()), "spool": str(pusher.spool)} for r in plan.repos]
    emit(rows, output, columns=STATUS_COLUMNS)


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="WAL file name (%f of restore_command)"),
    dest: Path = typer.Argument(..., help="where to write it (%p of restore_command)"),
    repo: str = typer.Option(..., "--repo", help="the remote repository to fetch from"),
    policy: Path | None = POLICY_OPTION,
) -> None:
    """Fetch one WAL file from a remote repository, decrypted and decompressed: the restore_command
    of a restore from that repository. Exit 1 when the repository does not hold it (the end of the
    archive, for PostgreSQL), with the reason when it cannot be read or decoded.

    Example: opsctl wal fetch --repo offsite 000000010000000000000003 /tmp/seg
    """
    from core.errors import OperationFailed
    from opsctl.backup.repos import remote as open_repo
    from opsctl.backup.walpush import fetch_wal

    _, pol = _setup(policy)
    remote = open_repo(pol, repo)
    if not fetch_wal(remote, name, dest):
        raise OperationFailed(f"{name} is not in {repo} ({remote.url})")
