"""Keyword ranking by BM25 over chunks, with each company's own statistics.

The unit ranked is the chunk: search answers chunks, and BM25's statistics describe the collection
of the units it ranks (FTS5 likewise ranks the rows it holds). For each query term present in a
chunk: ``idf · tf·(k1+1) / (tf + k1·(1 - b + b·dl/avgdl))``, summed over the query's distinct
terms, with ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` (Lucene's, never negative). ``tf`` is
how often the term occurs in the chunk (its ``tsvector``'s positions: stemmed English, stop words
out), ``dl`` the chunk's words (the column ``words``: all its positions); ``N``, ``avgdl`` and ``df``
are the company's, from ``bm25_totals`` and ``bm25_terms`` (migration 0013: a trigger on chunks
keeps them in the writing transaction, a partition's detach subtracts its rows).

A query matches chunks holding any of its terms; a chunk holding more of them sums more terms,
so it ranks above one holding a single term many times (tf saturates at ``k1 + 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Settings


@dataclass(frozen=True)
class Bm25:
    """The ranking's parameters: ``k1`` (how fast repeats of a term saturate), ``b`` (how much a
    long chunk is penalised); Lucene's and FTS5's defaults."""

    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def of(cls, settings: Settings) -> Bm25:
        """The settings ``keyword_bm25_k1`` and ``keyword_bm25_b``."""
        return cls(settings.keyword_bm25_k1, settings.keyword_bm25_b)


# terms: the query's distinct words as the chunks' tsvectors hold them; stats and idf: the
# company's, from a few index lookups; then each matching chunk's score from its stored length and
# the entries of its tsvector for the query's words (marked with weight A, then kept by ts_filter:
# two C functions, instead of unnesting every word of every matching chunk).
KEYWORD_SQL = """
WITH terms AS MATERIALIZED (
    SELECT coalesce(array_agg(DISTINCT u.lexeme), ARRAY[]::text[]) AS terms
    FROM unnest(to_tsvector('english', %(text)s)) u
), stats AS MATERIALIZED (
    SELECT greatest(sum(words), 1)::float8 / greatest(sum(chunks), 1) AS avgdl, sum(chunks)::float8 AS n
    FROM bm25_totals WHERE company_id = %(company)s
), idf AS MATERIALIZED (
    SELECT t.term, ln(1 + (stats.n - d.df + 0.5) / (d.df + 0.5)) AS idf
    FROM terms CROSS JOIN unnest(terms.terms) t(term) CROSS JOIN stats CROSS JOIN LATERAL (
        SELECT coalesce(sum(b.chunks), 0)::float8 AS df FROM bm25_terms b
        WHERE b.company_id = %(company)s AND b.term = t.term) d
)
SELECT c.id, c.document_id, c.external_id, c.body, s.score
FROM chunks c
CROSS JOIN CAST(replace(plainto_tsquery('english', %(text)s)::text, ' & ', ' | ') AS tsquery) AS tq
CROSS JOIN stats CROSS JOIN terms
CROSS JOIN LATERAL (
    SELECT sum(idf.idf * cardinality(u.positions) * (%(k1)s + 1)
               / (cardinality(u.positions) + %(k1)s * (1 - %(b)s + %(b)s * c.words / stats.avgdl))) AS score
    FROM unnest(ts_filter(setweight(c.tsv, 'A', terms.terms), ARRAY['a']::"char"[])) u
    JOIN idf ON idf.term = u.lexeme) s
WHERE c.company_id = %(company)s AND c.tsv @@ tq {filters}
ORDER BY s.score DESC, c.id LIMIT %(n)s
"""
