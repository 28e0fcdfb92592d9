"""Vector index maintenance end to end (the CLI and the daemon call this)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.humanize import format_bytes, plural
from opsctl.vindex.decide import IndexStats, ReindexDecision, TunePoint, needs_reindex
from opsctl.vindex.policy import VectorIndexPolicy

if TYPE_CHECKING:
    from core.config import Settings
    from opsctl.vindex.pg import Tune

KIND = "vector-index"
ProgressFn = Callable[[str, str, int, int], None]  # index, phase, done, total


def load_policy(path: Path | None = None, directory: Path | None = None) -> VectorIndexPolicy:
    from opsctl.policy import load

    return load(VectorIndexPolicy, KIND, path, directory)


def status(settings: Settings, policy: VectorIndexPolicy) -> list[dict[str, Any]]:
    from opsctl.context import connect_db
    from opsctl.vindex.pg import status as pg_status

    with connect_db(settings) as conn:
        return pg_status(conn, policy)


def tune(settings: Settings, policy: VectorIndexPolicy, *, apply: bool,
         on_point: Callable[[TunePoint], None] | None = None) -> Tune:
    """Measure recall and p50 per ef_search; with ``apply``, make the chosen one the database's default."""
    from core.errors import OperationFailed
    from opsctl.audit import record
    from opsctl.context import connect_db
    from opsctl.vindex.pg import set_database_ef_search
    from opsctl.vindex.pg import tune as pg_tune

    with connect_db(settings) as conn:
        result = pg_tune(conn, policy, on_point=on_point)
        if result.chosen is None:
            best = max(result.points, key=lambda p: p.recall)
            raise OperationFailed(f"no ef_search up to {policy.ef_search_max} reaches recall@{policy.k} "
                                  f"{policy.target_recall} (best {best.recall:.3f} at {best.ef_search}): "
                                  "raise ef_search_max or rebuild the index (opsctl index maintain)")
        if apply:
            set_database_ef_search(conn, result.chosen.ef_search)
            record(conn, "index.tune", target="hnsw.ef_search", from_state=result.previous,
                   to_state=result.chosen.ef_search,
                   reason=f"smallest ef_search with recall@{policy.k} >= {policy.target_recall}",
                   details={"points": [p.__dict__ for p in result.points], "queries": result.queries,
                            "exact_p50_ms": result.exact_p50_ms, "applied_to": "database default"})
    return result


@dataclass
class Maintenance:
    decisions: list[tuple[IndexStats, ReindexDecision]]
    applied: bool
    done: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        fired = [(st, d) for st, d in self.decisions if d.reindex]
        if not fired:
            return f"{plural(len(self.decisions), 'vector index', 'vector indexes')} healthy: nothing to rebuild"
        verb = "rebuilt" if self.applied else "would rebuild"
        return f"{verb} {len(fired)} of {len(self.decisions)}: " + "; ".join(
            f"{st.index} ({', '.join(d.reasons)})" for st, d in fired)


def maintain(settings: Settings, policy: VectorIndexPolicy, *, apply: bool,
             progress: ProgressFn | None = None) -> Maintenance:
    """Measure, decide (``needs_reindex``), then REINDEX CONCURRENTLY and VACUUM where a trigger fired."""
    from opsctl.audit import record
    from opsctl.context import connect_db, database_url
    from opsctl.vindex.pg import reindex_concurrently, stats_with_recall, vacuum

    with connect_db(settings) as conn:
        stats = stats_with_recall(conn, policy)
        result = Maintenance([(st, needs_reindex(st, policy)) for st in stats], apply)
        record(conn, "index.recall", target="chunks", reason=f"recall@{policy.k} per index",
               details={"recall": {st.index: st.recall for st in stats}, "target": policy.target_recall},
               change=False)
        if not apply:
            return result
        for st, decision in result.decisions:
            if not decision.reindex:
                continue
            seconds = reindex_concurrently(database_url(settings), st.index, _forward(progress, st.index))
            record(conn, "index.reindex", target=st.index, from_state=format_bytes(st.index_bytes),
                   to_state="rebuilt", reason="; ".join(decision.reasons),
                   details={"seconds": round(seconds, 3), "table": st.table, "live": st.live_tuples,
                            "dead": st.dead_tuples, "recall": st.recall})
            if progress is not None:
                progress(st.index, "vacuum", 0, 0)
            vac = vacuum(conn, st.table)
            record(conn, "index.vacuum", target=st.table, reason=f"after rebuilding {st.index}",
                   details={"seconds": round(vac, 3), "dead_before": st.dead_tuples})
            result.done.append(f"{st.index}: reindexed in {seconds:.1f}s, vacuumed in {vac:.1f}s")
    return result


def _forward(progress: ProgressFn | None, index: str) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None

    def report(phase: str, done: int, total: int) -> None:
        progress(index, phase, done, total)

    return report
