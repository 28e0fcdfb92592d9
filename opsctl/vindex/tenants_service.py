"""Per-company HNSW indexes end to end: count, plan (``opsctl.vindex.tenants``), apply with an audit
row per move (``opsctl index tenants`` and the daemon's ``tenant-indexes`` job call this)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import OperationFailed
from opsctl.vindex.tenants import Action, Move, plan_tenant_indexes, sentence

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.vindex.policy import VectorIndexPolicy
    from opsctl.vindex.tenants_pg import ProgressFn


class ReembedInProgress(OperationFailed):
    """A re-embed is carrying the own indexes onto its new vectors: they stay as they are until its switch."""


@dataclass
class TenantRun:
    moves: list[Move]
    applied: bool
    own: list[int]  # the companies with their own index before the run
    done: list[str] = field(default_factory=list)
    waits: str | None = None  # a dry run's plan that --apply would refuse now: why

    def sentence(self) -> str:
        said = sentence(self.moves, self.applied)
        return said if self.waits is None else f"{said}; --apply would refuse now: {self.waits}"


def _reembed_waits(conn: Any) -> str | None:
    """Why a re-embed keeps the own indexes as they are now (None: a run may change them): the
    re-embed's step, read now, through ``opsctl.reembed.plan.tenant_gate``."""
    from opsctl.reembed.pg import read_step
    from opsctl.reembed.plan import tenant_gate

    step, reembed = read_step(conn)
    gate = tenant_gate(step.step)
    if gate.free or reembed is None:
        return None
    return (f"a re-embed into {reembed.spec.label()} is in progress (space {reembed.id}): {gate.why} "
            f"(`opsctl index reembed --status` shows its step)")


def tenant_indexes(settings: Settings, policy: VectorIndexPolicy, *, apply: bool,
                   progress: ProgressFn | None = None) -> TenantRun:
    """Plan the own indexes; with ``apply``, build (online), complete and drop them, one audit row each.
    One run at a time (a session advisory lock): the daemon and an engineer by hand never race.
    During a re-embed's backfill (and its other steps before the carry) it goes on; from the carry
    to the switch ``ReembedInProgress``: the re-embed copies the own indexes onto the new vectors
    under the same lock (``opsctl.reembed.tenants``), and its switch replaces exactly those. The
    step is read under the lock, so a run and the carry never both decide on a stale set."""
    from core.search.tenantindex import tenant_index_name
    from opsctl.audit import record
    from opsctl.context import connect_db, database_url
    from opsctl.vindex.tenants_pg import TENANT_INDEX_LOCK, build, company_rows, drop, own_indexes

    with connect_db(settings) as conn:
        rows, current = company_rows(conn), own_indexes(conn)
        result = TenantRun(plan_tenant_indexes(rows, current, policy.tenants), apply, sorted(current))
        if not result.moves:
            return result
        if not apply:
            result.waits = _reembed_waits(conn)
            return result
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", TENANT_INDEX_LOCK).fetchone()
        if not (got and got[0]):  # another run, or the re-embed's carry or switch
            waits = _reembed_waits(conn)
            if waits is not None:
                raise ReembedInProgress(waits)
            raise OperationFailed("another tenant index run is going; try again when it has finished")
        try:
            waits = _reembed_waits(conn)
            if waits is not None:
                raise ReembedInProgress(waits)
            # plan again under the lock: the other run may have changed things meanwhile
            current = own_indexes(conn)
            result.moves = plan_tenant_indexes(rows, current, policy.tenants)
            for move in result.moves:
                started = time.monotonic()
                index = tenant_index_name(move.company_id)
                details: dict[str, object] = {"rows": move.rows, "share": round(move.share, 6)}
                if move.action is Action.drop:
                    drop(conn, move.company_id)
                    before, after = "own index", "shared index" if move.rows else "none"
                else:
                    built = build(conn, database_url(settings), move.company_id, settings.hnsw_m,
                                  settings.hnsw_ef_construction, progress)
                    before = "shared index" if move.action is Action.build else "own index (incomplete)"
                    after = "own index"
                    details["partitions_built"] = built
                seconds = time.monotonic() - started
                details["seconds"] = round(seconds, 3)
                record(conn, f"index.tenant.{move.action.value}", target=index, from_state=before,
                       to_state=after, reason=move.reason, details=details)
                result.done.append(f"{move.action.value} {index} in {seconds:.1f}s")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", TENANT_INDEX_LOCK)
    return result
