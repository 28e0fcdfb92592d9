"""Known-item search metrics and the tune/test split (pure).

Each query has exactly one right document. A ranker answers a list of document ids, best first;
repeats (several chunks of one document) count once, at their first position.

    doc_rank(ranked, target, k)     1-based rank of the target among the first k distinct ids, or None
    reciprocal_ranks(...)           1/rank (0 when missing) for each query
    mrr(rr), recall(ranks)          the means over a set of queries
    split(keys, seed)               a deterministic half/half split: "tune" and "test"
    choose(candidates, tune_score)  the parameter with the best score on the tune half
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeVar

Half = Literal["tune", "test"]
HALVES: tuple[Half, ...] = ("tune", "test")
P = TypeVar("P")


def distinct(ranked: Iterable[str]) -> list[str]:
    """``ranked`` with later repeats removed, order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for doc in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def doc_rank(ranked: Sequence[str], target: str, k: int = 10) -> int | None:
    """The target's 1-based rank among the first ``k`` distinct documents of ``ranked``, else None."""
    top = distinct(ranked)[:k]
    return top.index(target) + 1 if target in top else None


def reciprocal_rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


def mrr(ranks: Sequence[int | None]) -> float:
    """Mean reciprocal rank over the queries (a miss counts 0); 0 for no queries."""
    return sum(reciprocal_rank(r) for r in ranks) / len(ranks) if ranks else 0.0


def recall(ranks: Sequence[int | None]) -> float:
    """Share of queries whose document was found at all (within the k the ranks were cut at)."""
    return sum(r is not None for r in ranks) / len(ranks) if ranks else 0.0


def _order_key(key: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def split(keys: Sequence[str], seed: int) -> dict[Half, list[str]]:
    """``keys`` into two halves of equal size (tune gets the odd one): ordered by a hash of the seed
    and the key, the first half is ``tune``; each half keeps the order of ``keys``."""
    ranked = sorted(keys, key=lambda key: _order_key(key, seed))
    tune = set(ranked[: (len(ranked) + 1) // 2])
    return {"tune": [k for k in keys if k in tune], "test": [k for k in keys if k not in tune]}


def choose(candidates: Sequence[P], tune_score: Callable[[P], float]) -> P:
    """The candidate with the best score on the tune half; the earliest of equals (list the
    default first). Only the tune half may choose: the test half reports."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    best = candidates[0]
    best_score = tune_score(best)
    for candidate in candidates[1:]:
        value = tune_score(candidate)
        if value > best_score:
            best, best_score = candidate, value
    return best
