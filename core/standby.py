"""Streaming standbys of the embedded PostgreSQL: ``opsctl up --replicas N`` (docs/replicas.md).

A standby lives in ``<data dir>/replica-K`` and listens on the primary's socket directory with
port ``primary port + K``. Its first start copies the primary with ``pg_basebackup -R -X stream``
(into ``replica-K.new``, renamed when whole, so a copy cut short is never started) and creates
the physical replication slot ``opsctl_replica_K``: the primary keeps the WAL a standby has not
received yet, so one that was down catches up by streaming. A data dir whose slot is gone (a
primary restored from backup, or a ``--replicas`` count that went down and up again) is copied
afresh: without its slot it may need WAL the primary no longer has. Once copied it starts the
way the primary does (a direct child, as the ``pgserver`` user when root; ready when
postmaster.pid says ``standby``), and is supervised, restarted and stopped the same way.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from typing import Any

from core.embedded import EmbeddedPostgres, prepare_for_pg_user
from core.errors import ServiceUnavailable
from core.threads import Abort

SLOT_PREFIX = "opsctl_replica_"
STALE_SLOTS_SQL = (r"SELECT slot_name, active FROM pg_replication_slots WHERE slot_name LIKE 'opsctl\_replica\_%'"
                   " AND slot_type = 'physical'")


def slot_name(index: int) -> str:
    return f"{SLOT_PREFIX}{index}"


@dataclass
class EmbeddedStandby(EmbeddedPostgres):
    """Standby ``index`` (1, 2 …) of ``primary``, in ``primary's data dir's parent / replica-<index>``."""

    primary: EmbeddedPostgres | None = None
    index: int = 1
    name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.primary is not None
        self.name = f"replica-{self.index}"
        self.slot = slot_name(self.index)
        self.log_file = self.data_dir.parent / f"{self.name}.log"

    @classmethod
    def of(cls, primary: EmbeddedPostgres, index: int) -> EmbeddedStandby:
        return cls(primary.data_dir.parent / f"replica-{index}", port=primary.port + index, database=primary.database,
                   primary=primary, index=index)

    def _primary_conn(self) -> Any:
        import psycopg

        assert self.primary is not None
        return psycopg.connect(self.primary.admin_url, autocommit=True)

    def _slot_exists(self) -> bool:
        with self._primary_conn() as conn:
            return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                (self.slot,)).fetchone() is not None

    def init(self) -> None:
        """Copy the primary (pg_basebackup -R, with this standby's slot) unless a copy with its slot exists."""
        if self.initialised() and self._slot_exists():
            prepare_for_pg_user(self.data_dir)
            return
        assert self.primary is not None
        fresh = self.data_dir.with_name(self.data_dir.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        prepare_for_pg_user(fresh)
        with self._primary_conn() as conn:  # a stale slot of an older copy: its WAL is of no use now
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                         " WHERE slot_name = %s AND NOT active", (self.slot,))
        self._run("pg_basebackup", "-d", self.primary.admin_url, "-D", str(fresh), "-R", "-X", "stream",
                  "-c", "fast", "-C", "-S", self.slot, timeout=3600)
        fresh.chmod(0o700)  # mkdir's mode under the umask: PostgreSQL refuses a data dir others can read
        shutil.rmtree(self.data_dir, ignore_errors=True)
        fresh.rename(self.data_dir)

    def start(self, timeout: float = 120, abort: Abort | None = None) -> str:
        assert self.primary is not None
        if not self.primary.running():
            raise ServiceUnavailable(f"{self.name}: the primary is not running")
        return super().start(timeout, abort)

    def restart(self, abort: Abort) -> str:
        """The supervisor's restart: the same start."""
        return self.start(abort=abort)

    def _ensure_database(self) -> None:
        """Nothing to create: a standby holds the primary's databases, read-only."""

    def pause_replay(self) -> None:
        self._execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self._execute("SELECT pg_wal_replay_resume()")

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)


def drop_stale_slots(primary: EmbeddedPostgres, keep: int) -> list[str]:
    """Drop the inactive slots of standbys numbered above ``keep`` (``--replicas`` went down): a slot
    nobody reads from keeps WAL on the primary's disk for ever. Returns the slots dropped."""
    import psycopg

    dropped = []
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        for name, active in conn.execute(STALE_SLOTS_SQL).fetchall():
            number = re.fullmatch(r"opsctl_replica_(\d+)", name)
            if number and int(number[1]) > keep and not active:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                dropped.append(name)
    return dropped
