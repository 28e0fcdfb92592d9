"""The core bench's recall truth for per-document hits (``bench.search.nearest_per_document``)."""

from __future__ import annotations

import pytest

from bench.search import nearest_per_document, recall_at_k


@pytest.mark.parametrize(("ranked", "expected"), [
    ([], []),
    ([(1, 0.1, 10), (2, 0.2, 10), (3, 0.3, 11)], [(1, 0.1), (3, 0.3)]),  # a document's later chunks drop
    ([(5, 0.1, 7), (6, 0.2, 8), (7, 0.2, 7), (8, 0.4, 9)], [(5, 0.1), (6, 0.2), (8, 0.4)]),
])
def test_each_document_once_by_its_nearest_chunk(ranked: list[tuple[int, float, int]],
                                                 expected: list[tuple[int, float]]) -> None:
    assert nearest_per_document(ranked) == expected


def test_per_document_hits_are_whole_against_their_own_truth_and_not_against_chunks() -> None:
    ranked = [(1, 0.1, 10), (2, 0.11, 10), (3, 0.12, 10), (4, 0.3, 11), (5, 0.4, 12)]
    hits = [(1, 0.1), (4, 0.3), (5, 0.4)]  # what per-document search answers for k = 3
    assert recall_at_k(hits, nearest_per_document(ranked), 3) == 1.0
    assert recall_at_k(hits, [(c, d) for c, d, _ in ranked], 3) == pytest.approx(1 / 3)  # the old mismatch
