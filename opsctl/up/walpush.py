"""The WAL pusher as a child of ``opsctl up`` (when the backup policy names a remote repository):
``opsctl wal push --loop`` started once PostgreSQL runs, restarted by the supervisor if it dies,
stopped with SIGTERM (the uploads under way finish) before PostgreSQL stops. The process handling
is the daemon's (``opsctl.daemon.process.DaemonProcess``): own session, group killed at the end.

Why a supervised child and not a daemon job: the spool is a directory on the database's host. The
daemon's jobs run on whichever replica leads, which need not be that host, and only while one
leads (a leader change would pause WAL shipping, the RPO growing meanwhile); a job every few
seconds would also fill ``daemon_runs``. The pusher runs next to the spool, continuously, and needs
no database at all. Two pushers on one spool do no harm (uploads are idempotent by key, a mark is
written only after its object is verified) but waste uploads; ``opsctl up``'s data-dir lock keeps
it to one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from opsctl.daemon.process import DaemonProcess


@dataclass
class WalPushProcess(DaemonProcess):
    log_name: ClassVar[str] = "wal-push.log"
    label: ClassVar[str] = "the WAL pusher"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "opsctl.cli", "wal", "push", "--loop", "--metrics-port", str(self.metrics_port)]
