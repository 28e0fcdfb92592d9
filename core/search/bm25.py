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


# One field's statistics as CTEs {stats} (average length, count) and {idf} (per query term), from
# the company's rows of {totals} and {terms}, whose count column is {unit}.
_FIELD_STATS = """
), {stats} AS MATERIALIZED (
    SELECT greatest(sum(words), 1)::float8 / greatest(sum({unit}), 1) AS avgdl, sum({unit})::float8 AS n
    FROM {totals} WHERE company_id = %(company)s
), {idf} AS MATERIALIZED (
    SELECT t.term, ln(1 + ({stats}.n - d.df + 0.5) / (d.df + 0.5)) AS idf
    FROM terms CROSS JOIN unnest(terms.terms) t(term) CROSS JOIN {stats} CROSS JOIN LATERAL (
        SELECT coalesce(sum(b.{unit}), 0)::float8 AS df FROM {terms} b
        WHERE b.company_id = %(company)s AND b.term = t.term) d"""

# One field's BM25 over the rows matching the query: {stats}/{idf} the field's statistics, {tsv} and
# {words} its columns on row alias {row}.
_FIELD_SCORE = """
    SELECT sum({idf}.idf * cardinality(u.positions) * (%(k1)s + 1)
               / (cardinality(u.positions) + %(k1)s * (1 - %(b)s + %(b)s * {row}.{words} / {stats}.avgdl))) AS score
    FROM unnest(ts_filter(setweight({row}.{tsv}, 'A', terms.terms), ARRAY['a']::"char"[])) u
    JOIN {idf} ON {idf}.term = u.lexeme"""

# terms: the query's distinct words as the tsvectors hold them; stats and idf: the company's, for the
# body (over chunks) and the title (over documents: ``t`` names), from a few index lookups; each
# matching row's score from its stored length and the entries of its tsvector for the query's words
# (marked with weight A, then kept by ts_filter: two C functions, instead of unnesting every word of
# every matching row). A chunk's score is its body's plus ``title_weight`` times its document's
# title's; a document matching by its title alone is answered by its first chunk (that the filters keep).
KEYWORD_SQL = """
WITH terms AS MATERIALIZED (
    SELECT coalesce(array_agg(DISTINCT u.lexeme), ARRAY[]::text[]) AS terms
    FROM unnest(to_tsvector('english', %(text)s)) u{body_stats}{title_stats}
    WHERE %(title_weight)s > 0
), titles AS MATERIALIZED (
    SELECT d.id AS document_id, %(title_weight)s * s.score AS score
    FROM documents d CROSS JOIN {tq} CROSS JOIN terms CROSS JOIN tstats
    CROSS JOIN LATERAL ({title_score}) s
    WHERE %(title_weight)s > 0 AND d.company_id = %(company)s AND d.title_tsv @@ tq
), body AS MATERIALIZED (
    SELECT c.id, c.document_id, c.external_id, {{body}}, s.score
    FROM chunks c CROSS JOIN {tq} CROSS JOIN terms CROSS JOIN stats
    CROSS JOIN LATERAL ({body_score}) s
    WHERE c.company_id = %(company)s AND c.tsv @@ tq {{filters}}
), found AS (
    SELECT * FROM body
    UNION ALL
    SELECT f.id, f.document_id, f.external_id, f.body, 0 FROM titles t CROSS JOIN LATERAL (
        SELECT c.id, c.document_id, c.external_id, {{body}} FROM chunks c
        WHERE c.company_id = %(company)s AND c.document_id = t.document_id {{filters}}
        ORDER BY c.ord LIMIT 1) f
    WHERE NOT EXISTS (SELECT 1 FROM body WHERE body.document_id = t.document_id)
)
SELECT f.id, f.document_id, f.external_id, f.body, f.score + coalesce(t.score, 0) AS score
FROM found f LEFT JOIN titles t ON t.document_id = f.document_id
ORDER BY score DESC, f.id LIMIT %(n)s
""".format(tq="CAST(replace(plainto_tsquery('english', %(text)s)::text, ' & ', ' | ') AS tsquery) AS tq",
           body_stats=_FIELD_STATS.format(stats="stats", idf="idf", totals="bm25_totals", terms="bm25_terms",
                                          unit="chunks"),
           title_stats=_FIELD_STATS.format(stats="tstats", idf="tidf", totals="bm25_title_totals",
                                           terms="bm25_title_terms", unit="documents"),
           title_score=_FIELD_SCORE.format(idf="tidf", stats="tstats", row="d", tsv="title_tsv", words="title_words"),
           body_score=_FIELD_SCORE.format(idf="idf", stats="stats", row="c", tsv="tsv", words="words"))
