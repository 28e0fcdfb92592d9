"""How deep a per-document search reads: a first depth, deeper only while it holds fewer than k
documents, and always the hits that reading the whole ``depth`` gives (issue 13 §4)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.embed import HashEmbedder
from core.search.fusion import Aggregate, Ranking, deeper, rank_one
from core.search.retrieve import SearchRequest, candidates, embed_query, retrieve

DIM = 384
EF_SEARCH = 200  # set on the test's connection: the HNSW read's one sorted batch covers depth 100


@pytest.mark.parametrize(("read", "got", "found", "wanted", "last", "expected"), [
    (30, 30, 10, 10, None, None),  # enough documents: decided
    (30, 30, 4, 10, 100, 100),  # short: 4 times deeper, up to the last depth
    (10, 10, 4, 10, 100, 40),
    (30, 12, 4, 10, 100, None),  # the rows ran out: a deeper read finds nothing more
    (100, 100, 4, 10, 100, None),  # the last depth was read
    (120, 120, 4, 10, 100, None),  # past it (k above the last depth)
])
def test_deeper(read: int, got: int, found: int, wanted: int, last: int | None, expected: int | None) -> None:
    assert deeper(read, got, found, wanted, 100 if last is None else last) == expected


@pytest.mark.parametrize(("ranking", "n", "hybrid", "ordered", "expected"), [
    (Ranking(), 11, False, None, 33),  # per document by the best chunk: a first read of 3n
    (Ranking(), 5, False, None, 30),
    (Ranking(), 11, False, 500, 33),  # HNSW, its sorted batch covers the whole depth
    (Ranking(), 11, False, 100, 33),
    (Ranking(), 11, False, 99, 100),  # the deeper read would pass the sorted batch: read it all
    (Ranking(), 11, False, 0, 100),  # ef_search unknown
    (Ranking(), 40, False, None, 120),  # 3n past the candidates: the whole depth
    (Ranking(), 11, True, None, 100),  # hybrid fuses whole lists
    (Ranking(aggregate=Aggregate.sum), 11, False, None, 100),  # a document's score needs all its chunks
    (Ranking(aggregate=Aggregate.max_bonus, bonus=0.2), 11, False, None, 100),
    (Ranking(aggregate=Aggregate.max_bonus, bonus=0.0), 11, False, None, 33),
    (Ranking(per_document=False), 11, False, None, 11),  # chunk hits: exactly n
])
def test_first_depth(ranking: Ranking, n: int, hybrid: bool, ordered: int | None, expected: int) -> None:
    assert ranking.first_depth(n, hybrid, ordered) == expected
    assert ranking.first_depth(n, hybrid, ordered) <= ranking.depth(n, hybrid)


class Reads:
    """The connection, noting the depth (``n``) of each candidate read: what the search asked for."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.depths: list[int] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if isinstance(params, dict) and "n" in params:
            self.depths.append(int(params["n"]))
        return self.conn.execute(query, params, **kwargs)


def _documents(conn: psycopg.Connection[Any], company_id: int, docs: dict[str, list[str]]) -> None:
    embedder = HashEmbedder(DIM)
    for external_id, texts in docs.items():
        row = conn.execute(
            "INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at)"
            " VALUES (%s, %s, 't', '', %s, now()) RETURNING id",
            (company_id, external_id, external_id.encode().ljust(32, b"\x00"))).fetchone()
        assert row is not None
        for i, (text, vector) in enumerate(zip(texts, embedder.embed(texts), strict=True)):
            conn.execute(
                "INSERT INTO chunks (company_id, document_id, external_id, ord, body, embedding, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, now())", (company_id, row[0], external_id, i, text, vector))


def _hnsw(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
         "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon")


def _whole_depth(conn: psycopg.Connection[Any], company_id: int, req: SearchRequest, exact: bool,
                 ranking: Ranking) -> list[Any]:
    """What the search answered before: ``depth`` chunks read, one hit per document."""
    embedded = embed_query(HashEmbedder(DIM), req.query)
    vector, keyword = candidates(conn, None, company_id, req, exact, ranking.depth(req.k, False), embedded, ranking)
    return rank_one(vector or keyword, ranking, req.k)


@pytest.mark.parametrize("exact", [False, True])
def test_many_chunks_per_document_read_a_third_and_answer_the_same(
        conn: psycopg.Connection[Any], tenant: Any, exact: bool) -> None:
    # 60 documents of 8 chunks each, every chunk a few of the same 20 words: documents collapse
    docs = {f"doc-{d}": [" ".join(WORDS[(d * 7 + c * 3 + j) % len(WORDS)] for j in range(4)) + f" part{d}x{c}"
                         for c in range(8)] for d in range(60)}
    _documents(conn, tenant.company_id, docs)
    _hnsw(conn)
    ranking = Ranking()
    for query in ("alpha beta", "gamma delta epsilon", "sigma tau", "kappa", "mu nu xi omicron", "rho pi"):
        for mode in ("vector", "keyword"):
            req = SearchRequest(query=query, k=11, mode=mode)
            reads = Reads(conn)
            found = retrieve(reads, HashEmbedder(DIM), tenant.company_id, req, exact, ranking=ranking,
                             ef_search=EF_SEARCH)
            assert len(found) == 11, (query, mode)
            assert found == _whole_depth(conn, tenant.company_id, req, exact, ranking), (query, mode)
            assert reads.depths == [33], (query, mode)  # 33 chunks, not 100


def test_a_first_read_short_of_k_documents_reads_deeper(conn: psycopg.Connection[Any], tenant: Any) -> None:
    # two documents of 40 chunks each right on the query: the first 30 chunks hold 2 documents
    near = {f"near-{d}": [f"lorem ipsum dolor sit amet consectetur {d} {c}" for c in range(40)] for d in range(2)}
    far = {f"far-{d}": [f"lorem ipsum {WORDS[d % len(WORDS)]} {WORDS[(d * 3) % len(WORDS)]} {d}"] for d in range(30)}
    _documents(conn, tenant.company_id, {**near, **far})
    _hnsw(conn)
    ranking = Ranking()
    req = SearchRequest(query="lorem ipsum dolor sit amet consectetur", k=5, mode="vector")
    embedded = embed_query(HashEmbedder(DIM), req.query)
    first, _ = candidates(conn, None, tenant.company_id, req, True, 30, embedded, ranking)
    assert {h.external_id for h in first} <= set(near), "the setup: the first read holds only the two near ones"
    for exact in (True, False):
        reads = Reads(conn)
        found = retrieve(reads, HashEmbedder(DIM), tenant.company_id, req, exact, ranking=ranking,
                         ef_search=EF_SEARCH)
        assert reads.depths == [30, 100]
        assert len(found) == 5
        assert {h.external_id for h in found[:2]} == set(near)
        assert found == _whole_depth(conn, tenant.company_id, req, exact, ranking)


def test_without_a_known_ef_search_the_graph_read_is_whole(conn: psycopg.Connection[Any], tenant: Any) -> None:
    docs = {f"doc-{d}": [f"{WORDS[d % len(WORDS)]} {WORDS[c % len(WORDS)]} {c}" for c in range(5)] for d in range(40)}
    _documents(conn, tenant.company_id, docs)
    req = SearchRequest(query="alpha beta", k=10, mode="vector")
    reads = Reads(conn)
    assert len(retrieve(reads, HashEmbedder(DIM), tenant.company_id, req)) == 10
    assert reads.depths == [100]


@pytest.mark.parametrize(("own", "filtered", "configured", "learned", "expected"), [
    (True, False, None, 500, [33]),  # the database's ef_search, learned with the key: one sorted batch covers 100
    (True, False, None, 40, [100]),  # a batch of 40: read the whole depth, as before
    (True, False, None, None, [100]),  # not known
    (True, False, 500, 40, [33]),  # a configured ef_search wins over the learned one
    (True, False, 40, 500, [100]),
    # the shared graph's sorted batch holds other companies' rows (and a filter drops rows after it): whole depth
    (False, False, None, 500, [100]),
    (True, True, None, 500, [100]),
])
def test_search_reads_the_first_depth_by_the_ef_search_it_runs_with(
        db_url: str, redis_url: str, conn: psycopg.Connection[Any], tenant: Any, monkeypatch: pytest.MonkeyPatch,
        own: bool, filtered: bool, configured: int | None, learned: int | None, expected: list[int]) -> None:
    from psycopg import sql

    from core.cache import Cache
    from core.config import Settings
    from core.db import make_pool
    from core.search import retrieve as module
    from core.search.tenantindex import tenant_index_name
    from core.tenants import Principal
    from opsctl.vindex.tenants_pg import index_definition

    docs = {f"doc-{d}": [f"{WORDS[d % len(WORDS)]} {WORDS[c % len(WORDS)]} {c}" for c in range(5)] for d in range(40)}
    _documents(conn, tenant.company_id, docs)
    if own:  # the company's own graph (what `opsctl index tenants` builds online), complete
        conn.execute(sql.SQL("CREATE INDEX {} ON chunks ").format(sql.Identifier(tenant_index_name(tenant.company_id)))
                     + index_definition(tenant.company_id, 16, 64))
    depths: list[int] = []
    real = module.candidates

    def noted(*args: Any, **kwargs: Any) -> Any:
        depths.append(args[5])  # n
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "candidates", noted)
    extra = {} if configured is None else {"hnsw_ef_search": configured}
    settings = Settings(database_url=db_url, redis_url=redis_url, **extra)
    pool = make_pool(db_url, settings, min_size=1, max_size=1)
    try:
        found = module.search(pool, Cache(None), HashEmbedder(DIM), Principal(tenant.company_id, 0, learned),
                              SearchRequest(query="alpha beta", k=10, mode="vector",
                                            filters={"created_after": "2000-01-01T00:00:00Z"} if filtered else None),
                              0, exact_max_rows=0)
    finally:
        pool.close()
    assert len(found["results"]) == 10
    assert depths == expected
