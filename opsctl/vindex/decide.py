"""Pure decisions of vector index maintenance: recall, the ef_search to run, whether to reindex."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from opsctl.vindex.policy import VectorIndexPolicy

LADDER = (10, 16, 20, 24, 32, 40, 48, 64, 80, 100, 128, 160, 200, 256, 320, 400, 500, 640, 800, 1000)


def recall_at_k(approx: Sequence[int], exact: Sequence[int], k: int) -> float:
    """Share of the exact top-k found by the approximate top-k (1.0 when there is nothing to find)."""
    truth = set(exact[:k])
    if not truth:
        return 1.0
    return len(truth & set(approx[:k])) / len(truth)


def ef_candidates(policy: VectorIndexPolicy) -> list[int]:
    """The ef_search values a tune tries, ascending, within the bounds (both bounds included)."""
    inside = {v for v in LADDER if policy.ef_search_min <= v <= policy.ef_search_max}
    return sorted(inside | {policy.ef_search_min, policy.ef_search_max})


@dataclass(frozen=True)
class TunePoint:
    ef_search: int
    recall: float
    p50_ms: float


def choose_ef_search(points: Sequence[TunePoint], policy: VectorIndexPolicy) -> TunePoint | None:
    """The smallest ef_search whose recall meets the target (None: none of them does)."""
    for point in sorted(points, key=lambda p: p.ef_search):
        if point.recall >= policy.target_recall:
            return point
    return None


@dataclass(frozen=True)
class IndexStats:
    index: str
    table: str
    index_bytes: int
    table_bytes: int
    live_tuples: int
    dead_tuples: int
    recall: float | None = None
    last_vacuum: datetime | None = None
    valid: bool = True


@dataclass(frozen=True)
class ReindexDecision:
    reindex: bool
    reasons: list[str] = field(default_factory=list)

    def sentence(self, index: str) -> str:
        return f"reindex {index}: " + "; ".join(self.reasons) if self.reindex else f"{index}: healthy"


def needs_reindex(stats: IndexStats, policy: VectorIndexPolicy) -> ReindexDecision:
    """Which reindex triggers fire for one index (pure)."""
    triggers = policy.reindex
    reasons: list[str] = []
    if not stats.valid:
        reasons.append("the index is invalid (an interrupted build)")
    elif stats.live_tuples < triggers.min_rows:
        return ReindexDecision(False, [f"{stats.live_tuples} live rows < min_rows {triggers.min_rows}"])
    if triggers.recall_below_target and stats.recall is not None and stats.recall < policy.target_recall:
        reasons.append(f"recall@{policy.k} {stats.recall:.3f} < target {policy.target_recall:.3f}")
    total = stats.live_tuples + stats.dead_tuples
    if triggers.dead_tuple_fraction is not None and total and stats.dead_tuples / total > triggers.dead_tuple_fraction:
        reasons.append(f"dead tuples {stats.dead_tuples / total:.0%} > {triggers.dead_tuple_fraction:.0%}")
    if (triggers.index_to_table_ratio is not None and stats.table_bytes
            and stats.index_bytes > triggers.index_to_table_ratio * stats.table_bytes):
        reasons.append(f"index {stats.index_bytes / stats.table_bytes:.1f}x the table's size > "
                       f"{triggers.index_to_table_ratio:g}x")
    return ReindexDecision(bool(reasons), reasons)
