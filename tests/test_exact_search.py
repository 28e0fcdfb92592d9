"""Exact vector search for companies holding few chunks: the true neighbours, never the index."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from core.cache import Cache
from core.config import Settings
from core.db import make_pool
from core.embed import HashEmbedder
from core.search.fusion import Ranking
from core.search.retrieve import COMPANY_ROWS_SQL, SearchRequest, company_rows, retrieve, search, vector_query
from core.tenants import Principal

DIM = 384
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu")


def _insert_chunks(conn: psycopg.Connection[Any], company_id: int, texts: list[str]) -> list[int]:
    embedder = HashEmbedder(DIM)
    vectors = embedder.embed(texts)
    doc = conn.execute(
        "INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at)"
        " VALUES (%s, 'exact-doc', 't', '', %s, now()) RETURNING id", (company_id, b"\x00" * 32)).fetchone()
    assert doc is not None
    ids = []
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        row = conn.execute(
            "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
            " VALUES (%s, %s, 'exact-doc', %s, %s, %s, now()) RETURNING id",
            (company_id, doc[0], i, text, vector)).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    conn.commit()
    return ids


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=8)) + f" item{i}" for i in range(n)]


def test_exact_search_returns_the_true_neighbours_without_the_index(
        settings: Settings, conn: psycopg.Connection[Any], tenant: Any) -> None:
    texts = _texts(300, 1)
    ids = _insert_chunks(conn, tenant.company_id, texts)
    embedder = HashEmbedder(DIM)
    chunks = embedder.embed(texts)
    req = SearchRequest(query="gamma delta item7", k=10, mode="vector")
    query = embedder.embed([req.query])[0]
    best = np.sort(chunks @ query)[::-1][:10]  # the 10 best similarities, by brute force

    chunks_ranked = Ranking(per_document=False)  # the chunks themselves: all of one document here
    found = retrieve(conn, embedder, tenant.company_id, req, exact=True, ranking=chunks_ranked)
    assert len(found) == 10
    assert np.allclose([h.score for h in found], best, atol=1e-5), "the true neighbours (ties in any order)"
    similarity = dict(zip(ids, chunks @ query, strict=True))
    assert all(abs(similarity[h.chunk_id] - h.score) < 1e-5 for h in found)

    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):  # push any plan that can onto HNSW
        conn.execute(sql.SQL("SET {} = off").format(sql.Identifier(setting)))
    params = {"q": query, "company": tenant.company_id, "n": 10, "space": None}
    plans = {}
    for exact in (True, False):
        rows = conn.execute(sql.SQL("EXPLAIN (COSTS OFF) ") + vector_query(exact), params)
        plans[exact] = " ".join(r[0] for r in rows.fetchall())
    conn.rollback()
    assert "embedding_idx" not in plans[True]
    assert "embedding_idx" in plans[False]


def test_search_picks_exact_by_the_company_size(settings: Settings, conn: psycopg.Connection[Any], tenant: Any,
                                                other_tenant: Any) -> None:
    _insert_chunks(conn, tenant.company_id, _texts(30, 2))
    cache = Cache(None)
    assert company_rows(conn, cache, tenant.company_id, 10) == 11, "counted no further than the limit + 1"
    assert company_rows(conn, cache, tenant.company_id, 100) == 30
    assert company_rows(conn, cache, other_tenant.company_id, 100) == 0
    _insert_chunks(conn, other_tenant.company_id, _texts(5, 3))
    assert company_rows(conn, cache, other_tenant.company_id, 100) == 0, "kept in the process for a minute"
    assert conn.execute(COMPANY_ROWS_SQL, (other_tenant.company_id, 101)).fetchone() == (5,)

    pool = make_pool(settings.database_url or "", settings, min_size=1, max_size=1)
    try:
        embedder = HashEmbedder(DIM)
        req = SearchRequest(query="beta item3", k=5, mode="hybrid")
        chunks_ranked = Ranking(per_document=False)  # the chunks themselves: all of one document here
        exact = search(pool, Cache(None), embedder, Principal(tenant.company_id, 0), req, 0, exact_max_rows=100,
                       ranking=chunks_ranked)
        graph = search(pool, Cache(None), embedder, Principal(tenant.company_id, 0), req, 0, exact_max_rows=0,
                       ranking=chunks_ranked)
    finally:
        pool.close()
    assert [h["chunk_id"] for h in exact["results"]] == [h["chunk_id"] for h in graph["results"]], \
        "on 30 rows the index finds the same neighbours"
    assert len(exact["results"]) == 5


@pytest.mark.parametrize("limit", [0, 10_000])
def test_exact_limit_is_a_setting(limit: int) -> None:
    from tests.conftest import make_settings

    assert make_settings(vector_exact_max_rows=limit).vector_exact_max_rows == limit


def test_a_query_embedded_already_is_not_embedded_again(conn: psycopg.Connection[Any], tenant: Any) -> None:
    """``embedded``: the query's (vector, space) the caller holds (``retrieve_grouped`` embeds once
    for all its rounds); no embedder is asked then."""
    _insert_chunks(conn, tenant.company_id, _texts(40, 4))
    embedder = HashEmbedder(DIM)
    req = SearchRequest(query="beta item3", k=5, mode="vector")
    chunks_ranked = Ranking(per_document=False)
    embedded = (embedder.embed([req.query])[0], None)
    given = retrieve(conn, None, tenant.company_id, req, exact=True, embedded=embedded, ranking=chunks_ranked)
    assert given == retrieve(conn, embedder, tenant.company_id, req, exact=True, ranking=chunks_ranked)
    assert len(given) == 5
