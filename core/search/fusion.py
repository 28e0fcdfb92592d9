"""Ranking decisions after the SQL: chunk scores aggregated per document, and hybrid fusion (pure).

A search's SQL answers chunks: keyword (BM25) and vector (cosine similarity) candidates, each list
best first. What is ranked and answered is decided here:

- ``per_document`` (setting ``search_per_document``, default on): one hit per document, its best
  chunk, the document scored by ``aggregate`` over its candidate chunks: ``max`` (its best chunk),
  ``sum`` (all of them), ``max_bonus`` (the best plus ``bonus`` times the rest: a page matching in
  several places ranks above a page matching as well in one). Off: hits are chunks, as ranked.
- ``fusion`` (setting ``search_fusion``) merges the vector and keyword lists (of documents, or of
  chunks when not per document): ``rrf`` reciprocal rank fusion, each list weighted
  (``1 / (c + rank)`` times the list's weight: ``keyword_weight`` for keyword, the rest for vector;
  0.5 is plain RRF); ``minmax`` the weighted sum of the scores scaled to [0, 1] within each list
  (a missing item contributes 0); ``zscore`` the weighted sum of standard scores within each list (a
  missing item gets its list's lowest).

Ties break by the smaller chunk id: rankings are repeatable. Measured on ``bench.search_eval``
(README, "Search quality"); the defaults are the parameters chosen there on the tune half.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from core.search.bm25 import Bm25

if TYPE_CHECKING:
    from core.config import Settings

RRF_K = 60

T = TypeVar("T")


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: int
    external_id: str
    text: str | None  # None: not read (``fields`` without text)
    score: float

    def as_dict(self, thread_id: int | None = None, matched: int | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {"document_id": self.document_id, "external_id": self.external_id,
                                 "chunk_id": self.chunk_id, "text": self.text, "score": round(self.score, 6)}
        if thread_id is not None:
            found["thread_id"] = thread_id
            if matched is not None:
                found["matched_messages"] = matched
        return found


class Aggregate(StrEnum):
    max = "max"
    sum = "sum"
    max_bonus = "max_bonus"


class Fusion(StrEnum):
    rrf = "rrf"
    minmax = "minmax"
    zscore = "zscore"


@dataclass(frozen=True)
class Ranking:
    """Every parameter of a search's ranking (the settings named in ``of``)."""

    bm25: Bm25 = field(default_factory=Bm25)
    title_weight: float = 0.5
    per_document: bool = True
    aggregate: Aggregate = Aggregate.max
    bonus: float = 0.0
    fusion: Fusion = Fusion.minmax
    keyword_weight: float = 0.5
    rrf_k: int = RRF_K
    candidates: int = 100

    @classmethod
    def of(cls, settings: Settings) -> Ranking:
        """The settings ``keyword_bm25_*``, ``keyword_title_weight`` and ``search_*`` of ranking."""
        return cls(Bm25.of(settings), settings.keyword_title_weight, settings.search_per_document,
                   Aggregate(settings.search_aggregate), settings.search_aggregate_bonus,
                   Fusion(settings.search_fusion), settings.search_fusion_keyword_weight, settings.search_rrf_k,
                   settings.search_candidates)

    @property
    def fingerprint(self) -> str:
        """Every parameter as text, part of a cached answer's key: an answer ranked otherwise (a
        setting changed, two API versions during a rollout) is another key, never served for this one."""
        return repr(self)

    def depth(self, n: int, hybrid: bool = True) -> int:
        """How many chunks each half reads for ``n`` results: more when documents collapse; one
        mode with chunk hits reads exactly ``n``."""
        if not hybrid and not self.per_document:
            return n
        return max(n * 3, 30, self.candidates if self.per_document else 0)

    @property
    def by_best_chunk(self) -> bool:
        """Whether a document scores as its best chunk alone (``max``, or ``max_bonus`` without bonus)."""
        return self.aggregate is Aggregate.max or (self.aggregate is Aggregate.max_bonus and self.bonus == 0)

    def first_depth(self, n: int, hybrid: bool = True, ordered: int | None = None) -> int:
        """How many chunks one mode reads first for ``n`` results, reading deeper up to ``depth`` only
        while they hold fewer than ``n`` documents (``deeper``). Less than ``depth`` when hits are per
        document by their best chunk and a shorter read is a prefix of the deeper one: then the first
        ``n`` documents of the shorter read are those of the deeper one, exactly. ``ordered``: how many
        chunks the read answers in exact order (an HNSW read: its ef_search, one sorted batch; None:
        all, an exact or keyword read). Hybrid fuses scores of whole candidate lists: ``depth``."""
        full = self.depth(n, hybrid)
        if hybrid or not self.per_document or not self.by_best_chunk or (ordered is not None and ordered < full):
            return full
        return min(full, max(n * 3, 30))


def deeper(read: int, got: int, found: int, wanted: int, last: int) -> int | None:
    """The next depth after a read of ``read`` rows that returned ``got`` and made ``found`` of the
    ``wanted`` results: 4 times deeper, up to ``last``; None when the answer is decided (enough
    found, the rows ran out, or ``last`` was read) (pure)."""
    if found >= wanted or got < read or read >= last:
        return None
    return min(read * 4, last)


def escalated(read: Callable[[int], tuple[int, list[T]]], first: int, last: int, wanted: int) -> list[T]:
    """The answer of ``read(depth)`` (rows read, results made of them) from depth ``first``, read
    deeper while ``deeper`` says so: per-document hits and thread groups read this way."""
    depth = first
    while True:
        got, answer = read(depth)
        following = deeper(depth, got, len(answer), wanted, last)
        if following is None:
            return answer
        depth = following


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.document_id, hit.external_id, hit.text, score)


def per_document(hits: Sequence[Hit], aggregate: Aggregate = Aggregate.max, bonus: float = 0.0) -> list[Hit]:
    """One hit per document of ``hits`` (best first): its best chunk, scored by ``aggregate`` over
    the document's chunks among ``hits``; best document first."""
    best: dict[int, Hit] = {}
    totals: dict[int, float] = {}
    for hit in hits:
        top = best.get(hit.document_id)
        if top is None or (-hit.score, hit.chunk_id) < (-top.score, top.chunk_id):
            best[hit.document_id] = hit
        totals[hit.document_id] = totals.get(hit.document_id, 0.0) + hit.score
    if aggregate is Aggregate.max:
        scores = {doc: hit.score for doc, hit in best.items()}
    elif aggregate is Aggregate.sum:
        scores = totals
    else:
        scores = {doc: hit.score + bonus * (totals[doc] - hit.score) for doc, hit in best.items()}
    order = sorted(scores, key=lambda doc: (-scores[doc], best[doc].chunk_id))
    return [_rescored(best[doc], scores[doc]) for doc in order]


def _rrf(ranking: Sequence[Hit], c: int) -> list[float]:
    return [1.0 / (c + rank) for rank in range(1, len(ranking) + 1)]


def _minmax(ranking: Sequence[Hit]) -> list[float]:
    values = [h.score for h in ranking]
    low, high = min(values), max(values)
    return [1.0 if high == low else (v - low) / (high - low) for v in values]


def _zscore(ranking: Sequence[Hit]) -> list[float]:
    values = [h.score for h in ranking]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [0.0 if spread == 0 else (v - mean) / spread for v in values]


def fuse(rankings: Sequence[tuple[Sequence[Hit], float]], fusion: Fusion, k: int, key: Callable[[Hit], int],
         c: int = RRF_K) -> list[Hit]:
    """The top ``k`` of ``rankings`` (each a list best first and its weight) merged by ``fusion``;
    items are the same when ``key`` is (document or chunk id); an item found in several lists is
    answered with its hit from the list where it ranks best (the earlier list on a tie)."""
    scores: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    best_rank: dict[int, int] = {}
    floors = 0.0
    for ranking, weight in rankings:
        if not ranking:
            continue
        values = {Fusion.rrf: lambda r: _rrf(r, c), Fusion.minmax: _minmax, Fusion.zscore: _zscore}[fusion](ranking)
        floor = min(values) if fusion is Fusion.zscore else 0.0
        seen = set()
        for rank, (hit, value) in enumerate(zip(ranking, values, strict=True)):
            item = key(hit)
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight * (value - floor)
            if rank < best_rank.get(item, len(ranking) + 1):
                best_rank[item], hits[item] = rank, hit
        floors += weight * floor
    order = sorted(scores, key=lambda item: (-scores[item], hits[item].chunk_id))[:k]
    return [_rescored(hits[item], scores[item] + floors) for item in order]


def rank_one(hits: Sequence[Hit], ranking: Ranking, k: int) -> list[Hit]:
    """Keyword or vector mode's answer from its chunk candidates (best first)."""
    if ranking.per_document:
        return per_document(hits, ranking.aggregate, ranking.bonus)[:k]
    return list(hits[:k])


def rank_hybrid(vector: Sequence[Hit], keyword: Sequence[Hit], ranking: Ranking, k: int) -> list[Hit]:
    """Hybrid mode's answer: the two halves' chunk candidates (each best first), per document or
    not, fused with the keyword half weighted ``keyword_weight`` and the vector half the rest."""
    if ranking.per_document:
        vector = per_document(vector, ranking.aggregate, ranking.bonus)
        keyword = per_document(keyword, ranking.aggregate, ranking.bonus)
    w = ranking.keyword_weight
    return fuse([(keyword, w), (vector, 1.0 - w)], ranking.fusion, k,
                (lambda h: h.document_id) if ranking.per_document else (lambda h: h.chunk_id), ranking.rrf_k)
