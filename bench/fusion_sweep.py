"""Choosing the ranking's parameters on one ingested stack (``python -m bench.search_eval --sweep``).

For each keyword title weight, every query's candidates (vector and keyword chunks, ``DEPTH`` of
each, by the service's own SQL: ``core.search.retrieve.candidates``) are read once; every other
parameter is a pure function of those lists (``core.search.fusion``), so each combination is
scored without another query: per document or not, the aggregate (max, sum, max plus a bonus for
further chunks), the candidates read (a prefix of the lists equals a smaller LIMIT), the fusion
(plain RRF, weighted RRF, min-max, z-score) and its keyword weight. The parameters are chosen on the
tune half (``evalmetrics.choose``: the first listed wins ties, so list the current defaults first);
the test half is reported. Also the ceiling of fusion: the share of queries whose page is among the
top 10 pages of either half (no fusion of the two lists can rank a page found by neither).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

from bench.evalmetrics import HALVES, choose, distinct, doc_rank, mrr, recall
from bench.manpages import Page
from core.search.fusion import Aggregate, Fusion, Hit, Ranking, rank_hybrid, rank_one

K = 10
DEPTH = 300
TITLE_WEIGHTS = (0.5, 0.0, 1.0, 2.0, 4.0)
CANDIDATES = (100, 30, 300)
AGGREGATES = ((Aggregate.max, 0.0), (Aggregate.sum, 0.0), (Aggregate.max_bonus, 0.1),
              (Aggregate.max_bonus, 0.25), (Aggregate.max_bonus, 0.5))
FUSIONS = ((Fusion.minmax, 0.5, 60), (Fusion.rrf, 0.5, 60), (Fusion.rrf, 0.5, 10),
           *((f, w, 60) for f in (Fusion.rrf, Fusion.minmax, Fusion.zscore) for w in (0.3, 0.4, 0.6, 0.7)),
           (Fusion.zscore, 0.5, 60), *((Fusion.rrf, w, 10) for w in (0.3, 0.7)))

Lists = dict[str, tuple[list[Hit], list[Hit]]]  # page -> (vector, keyword) candidates


@dataclass(frozen=True)
class Trial:
    mode: str
    ranking: Ranking
    mrr: dict[str, float]
    recall: dict[str, float]

    def label(self) -> str:
        r = self.ranking
        parts = [f"title {r.title_weight:g}"] if self.mode != "vector" else []
        if r.per_document:
            parts.append(f"per document {r.aggregate.value}" + (f" {r.bonus:g}" if r.aggregate is Aggregate.max_bonus
                                                                else "") + f", {r.candidates} candidates")
        else:
            parts.append("chunks")
        if self.mode == "hybrid":
            parts.append(f"{r.fusion.value} keyword weight {r.keyword_weight:g}"
                         + (f" c {r.rrf_k}" if r.fusion is Fusion.rrf else ""))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "parameters": self.label(), "mrr": self.mrr, "recall": self.recall}


def _score(mode: str, ranking: Ranking, answers: dict[str, list[str]], halves: dict[str, list[str]]) -> Trial:
    ranks = {name: doc_rank(answer, name, K) for name, answer in answers.items()}
    per = {h: [ranks[n] for n in halves[h]] for h in HALVES}
    return Trial(mode, ranking, {h: mrr(r) for h, r in per.items()}, {h: recall(r) for h, r in per.items()})


def _answers(lists: Lists, rank: Callable[[list[Hit], list[Hit]], list[Hit]]) -> dict[str, list[str]]:
    return {name: [h.external_id for h in rank(v, kw)] for name, (v, kw) in lists.items()}


def _cut(hits: list[Hit], ranking: Ranking) -> list[Hit]:
    return hits[: ranking.depth(K)]


def _one(r: Ranking, vector: bool) -> Callable[[list[Hit], list[Hit]], list[Hit]]:
    return lambda v, kw: rank_one(_cut(v if vector else kw, r), r, K)


def _hybrid(r: Ranking) -> Callable[[list[Hit], list[Hit]], list[Hit]]:
    return lambda v, kw: rank_hybrid(_cut(v, r), _cut(kw, r), r, K)


def trials(by_title: dict[float, Lists], halves: dict[str, list[str]], base: Ranking) -> list[Trial]:
    """Every combination scored: keyword and vector over title weights and aggregation, hybrid
    over those and the fusions (pure: the lists are read already)."""
    shapes = [replace(base, per_document=False)] + [
        replace(base, aggregate=a, bonus=b, candidates=c) for (a, b), c in product(AGGREGATES, CANDIDATES)]
    out: list[Trial] = []
    for shape in shapes:
        lists = by_title[TITLE_WEIGHTS[0]]
        out.append(_score("vector", shape, _answers(lists, _one(shape, True)), halves))
        for weight, lists in by_title.items():
            r = replace(shape, title_weight=weight)
            out.append(_score("keyword", r, _answers(lists, _one(r, False)), halves))
            if shape.per_document and (shape.candidates != CANDIDATES[0] or shape.bonus == AGGREGATES[2][1]):
                continue  # hybrid: the candidates read as the defaults, two bonuses (the grid stays small)
            for fusion, w, c in FUSIONS:
                h = replace(r, fusion=fusion, keyword_weight=w, rrf_k=c)
                out.append(_score("hybrid", h, _answers(lists, _hybrid(h)), halves))
    return out


def ceiling(lists: Lists, halves: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """recall@10 of the union of both halves' top 10 pages, and of all their candidates."""
    found: dict[str, dict[str, bool]] = {"top10": {}, "candidates": {}}
    for name, (vector, keyword) in lists.items():
        v, kw = distinct(h.external_id for h in vector), distinct(h.external_id for h in keyword)
        found["top10"][name] = name in v[:K] or name in kw[:K]
        found["candidates"][name] = name in v or name in kw
    return {what: {h: sum(got[n] for n in halves[h]) / len(halves[h]) for h in HALVES} for what, got in found.items()}


def sweep(conn: Any, embedder: Any, company_id: int, exact: bool, pages: Sequence[Page], halves: dict[str, list[str]],
          base: Ranking, say: Callable[[str], None]) -> dict[str, Any]:
    """Read the candidates once per title weight, score every combination; the best per mode (on
    tune), plain RRF's and the defaults' rows, and the ceiling."""
    from core.search.retrieve import SearchRequest, candidates

    by_title: dict[float, Lists] = {}
    for weight in TITLE_WEIGHTS:
        say(f"sweep: candidates with title weight {weight:g}")
        ranking = replace(base, title_weight=weight)
        lists: Lists = {}
        for page in pages:
            req = SearchRequest.model_validate({"query": page.query, "k": K, "mode": "hybrid"})
            lists[page.name] = candidates(conn, embedder, company_id, req, exact, DEPTH, ranking=ranking)
            conn.rollback()
        by_title[weight] = lists
    say("sweep: scoring the combinations")
    tried = trials(by_title, halves, base)
    best = {mode: choose([t for t in tried if t.mode == mode], lambda t: t.mrr["tune"])
            for mode in ("keyword", "vector", "hybrid")}
    def first(label: str, mode: str, test: Callable[[Ranking], bool]) -> dict[str, Any]:
        found = next((t for t in tried if t.mode == mode and test(t.ranking)), None)
        return {label: found.as_dict()} if found else {}

    reference = first("hybrid: plain RRF of chunks, no title (before)", "hybrid", lambda r: not r.per_document
                      and r.title_weight == 0 and r.fusion is Fusion.rrf and r.keyword_weight == 0.5 and r.rrf_k == 60)
    reference |= first("keyword: chunks, no title (before)", "keyword",
                       lambda r: not r.per_document and r.title_weight == 0)
    reference |= first("vector: chunks (before)", "vector", lambda r: not r.per_document)
    for mode in best:
        reference |= first(f"{mode}: the defaults", mode, lambda r: r == base)
    return {"best": {m: t.as_dict() for m, t in best.items()}, "reference": reference,
            "ceiling": ceiling(by_title[TITLE_WEIGHTS[0]], halves), "combinations": len(tried),
            "top": [t.as_dict() for t in sorted(tried, key=lambda t: -t.mrr["tune"])[:40]]}
