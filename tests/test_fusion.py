"""Ranking after the SQL (core.search.fusion): aggregation per document and hybrid fusion, as tables."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.search.bm25 import Bm25
from core.search.fusion import Aggregate, Fusion, Hit, Ranking, fuse, per_document, rank_hybrid, rank_one


def h(chunk: int, doc: int, score: float = 0.0) -> Hit:
    return Hit(chunk, doc, f"d{doc}", f"chunk {chunk}", score)


# document 1: chunks 10 (3.0), 11 (2.0), 12 (1.0); document 2: chunk 20 (4.0); document 3: 30 (3.0), 31 (3.0)
CHUNKS = [h(20, 2, 4.0), h(10, 1, 3.0), h(31, 3, 3.0), h(30, 3, 3.0), h(11, 1, 2.0), h(12, 1, 1.0)]


@pytest.mark.parametrize(("aggregate", "bonus", "expected"), [
    (Aggregate.max, 0.0, [(20, 4.0), (10, 3.0), (30, 3.0)]),  # equal documents: the smaller best chunk first
    (Aggregate.sum, 0.0, [(10, 6.0), (30, 6.0), (20, 4.0)]),
    (Aggregate.max_bonus, 0.5, [(10, 4.5), (30, 4.5), (20, 4.0)]),
    (Aggregate.max_bonus, 0.1, [(20, 4.0), (10, 3.3), (30, 3.3)]),
    (Aggregate.max_bonus, 0.0, [(20, 4.0), (10, 3.0), (30, 3.0)]),
])
def test_per_document(aggregate: Aggregate, bonus: float, expected: list[tuple[int, float]]) -> None:
    found = per_document(CHUNKS, aggregate, bonus)
    assert len({f.document_id for f in found}) == len(found) == 3  # one hit per document
    assert [(f.chunk_id, f.score) for f in found] == [(c, pytest.approx(s)) for c, s in expected]
    assert {f.document_id: f.text for f in found}[3] == "chunk 30"  # a document's best chunk, the smaller id on ties


def test_per_document_of_nothing() -> None:
    assert per_document([]) == []


V = [h(1, 1, 0.9), h(2, 2, 0.8), h(3, 3, 0.5)]  # vector: similarities
KW = [h(3, 3, 12.0), h(4, 4, 6.0), h(1, 1, 3.0)]  # keyword: BM25 scores


@pytest.mark.parametrize(("fusion", "keyword_weight", "c", "expected"), [
    # plain RRF: 1 and 3 are in both lists; 1 ranks 1st + 3rd, 3 ranks 3rd + 1st: equal, smaller chunk first
    (Fusion.rrf, 0.5, 60, [1, 3, 2, 4]),
    (Fusion.rrf, 0.8, 60, [3, 1, 4, 2]),  # the keyword list weighs more
    (Fusion.rrf, 0.2, 60, [1, 3, 2, 4]),
    (Fusion.rrf, 0.0, 60, [1, 2, 3, 4]),  # vector only (keyword items score 0, after)
    # min-max: vector 1 → 1, 0.75, 0; keyword 1, 6/9 = 0.333, 0
    (Fusion.minmax, 0.5, 60, [1, 3, 2, 4]),  # 1: .5; 3: .5; 2: .375; 4: .1667
    (Fusion.minmax, 0.7, 60, [3, 1, 4, 2]),  # 3: .7; 1: .3; 4: .233; 2: .225
    # z-scores: vector (0.9, 0.8, 0.5) → (0.98, 0.39, -1.37); keyword (12, 6, 3) → (1.34, -0.27, -1.07);
    # missing: the list's lowest
    (Fusion.zscore, 0.5, 60, [3, 1, 2, 4]),  # 3: -.015; 1: -.045; 2: -.34; 4: -.82
    (Fusion.zscore, 0.3, 60, [1, 2, 3, 4]),  # 1: .37; 2: -.05; 3: -.56; 4: -1.04
])
def test_fuse(fusion: Fusion, keyword_weight: float, c: int, expected: list[int]) -> None:
    fused = fuse([(KW, keyword_weight), (V, 1 - keyword_weight)], fusion, 10, lambda x: x.chunk_id, c)
    assert [x.chunk_id for x in fused] == expected
    assert [x.score for x in fused] == sorted((x.score for x in fused), reverse=True)


def test_fuse_scores() -> None:
    rrf = fuse([(KW, 0.5), (V, 0.5)], Fusion.rrf, 2, lambda x: x.chunk_id, 60)
    assert rrf[0].score == pytest.approx(0.5 / 61 + 0.5 / 63)
    minmax = fuse([(KW, 0.5), (V, 0.5)], Fusion.minmax, 10, lambda x: x.chunk_id)
    assert {x.chunk_id: x.score for x in minmax} == pytest.approx({1: 0.5, 3: 0.5, 2: 0.375, 4: 0.5 / 3})
    assert fuse([([h(1, 1, 2.0)], 1.0)], Fusion.minmax, 1, lambda x: x.chunk_id)[0].score == 1.0  # one score: 1
    assert fuse([([h(1, 1, 2.0)], 1.0), ([], 1.0)], Fusion.zscore, 1, lambda x: x.chunk_id)[0].score == 0.0


def test_an_item_in_both_lists_is_answered_by_its_best_ranked_hit() -> None:
    vector = [h(7, 1, 0.9)]  # document 1's chunk 7 is the vector half's first
    keyword = [h(9, 2, 5.0), h(8, 1, 4.0)]  # and its chunk 8 the keyword half's second
    fused = fuse([(keyword, 0.5), (vector, 0.5)], Fusion.rrf, 10, lambda x: x.document_id)
    assert [(x.document_id, x.chunk_id) for x in fused] == [(1, 7), (2, 9)]


def test_hybrid_per_document_joins_a_documents_chunks_across_the_halves() -> None:
    """Plain RRF of chunks misses that the vector half's chunk 7 and the keyword half's chunk 8 are
    one document; per document they are, and it ranks first."""
    vector = [h(5, 3, 0.9), h(7, 1, 0.8)]
    keyword = [h(6, 2, 9.0), h(8, 1, 8.0)]
    chunks = rank_hybrid(vector, keyword, Ranking(per_document=False, fusion=Fusion.rrf), 10)
    assert [x.document_id for x in chunks][:2] != [1, 1] and chunks[0].document_id != 1
    documents = rank_hybrid(vector, keyword, Ranking(fusion=Fusion.rrf), 10)
    assert [x.document_id for x in documents] == [1, 3, 2]  # 3 and 2 tie: the smaller chunk id first


def test_rank_one() -> None:
    assert rank_one(CHUNKS, Ranking(per_document=False), 3) == CHUNKS[:3]
    assert [x.chunk_id for x in rank_one(CHUNKS, Ranking(), 2)] == [20, 10]
    assert [x.chunk_id for x in rank_one(CHUNKS, Ranking(aggregate=Aggregate.sum), 3)] == [10, 30, 20]


@pytest.mark.parametrize(("ranking", "n", "hybrid", "expected"), [
    (Ranking(per_document=False), 10, True, 30), (Ranking(per_document=False), 20, True, 60),
    (Ranking(per_document=False), 10, False, 10),  # one mode, chunk hits: exactly k rows
    (Ranking(candidates=100), 10, True, 100), (Ranking(candidates=100), 50, True, 150),
    (Ranking(candidates=100), 10, False, 100), (Ranking(candidates=5), 1, True, 30),
])
def test_depth(ranking: Ranking, n: int, hybrid: bool, expected: int) -> None:
    assert ranking.depth(n, hybrid) == expected


def test_the_settings_defaults_are_the_functions_defaults() -> None:
    """``retrieve``'s default ranking is the service's: what the harness's raw path checks."""
    assert Ranking.of(Settings()) == Ranking()
    custom = Settings(keyword_bm25_k1=2.0, keyword_title_weight=0.0, search_per_document=False,
                      search_aggregate="sum", search_aggregate_bonus=0.3, search_fusion="zscore",
                      search_fusion_keyword_weight=0.25, search_rrf_k=10, search_candidates=50)
    assert Ranking.of(custom) == Ranking(Bm25(2.0, 0.75), 0.0, False, Aggregate.sum, 0.3, Fusion.zscore, 0.25, 10, 50)
