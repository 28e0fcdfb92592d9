"""Company-scoped retrieval: vector (HNSW), keyword (full text) and hybrid (reciprocal rank fusion).

Keyword search matches any of the query's words (stemmed, English) and ranks by BM25 with the
company's own statistics (``core.search.bm25``), so more matching words and rarer ones rank higher.

Vector search runs with ``hnsw.iterative_scan = relaxed_order`` (set on every pooled
connection, or in the search's own transaction behind a transaction pooler: ``core.pooler``)
inside a materialized CTE that is re-sorted, so a company filter still returns k results in
exact distance order (pgvector >= 0.8).

A company holding few chunks is searched exactly instead (``use_exact``): the graph is built over
every company's rows, so a filter keeping a small share of them makes the HNSW search both lossy
and slow, while comparing that company's few thousand rows, found through its B-tree index,
is fast and finds the true neighbours (pgvector's own advice for selective filters). A large
company may have its own partial HNSW index (``core.search.tenantindex``, ``opsctl index tenants``):
the graph query names it as a constant so the planner uses that index, and it is never searched
exactly then.

A hit on e-mail (a document ``email:<message id>``) carries its message's ``thread_id``, read at
query time from ``mail_messages`` (merges change it; every ingest bumps the data version, so a
cached answer never holds a thread id older than the last ingest). ``group_by: thread`` answers k
threads, each its best chunk and how many of its messages are among the candidates: it ranks
``10·k`` chunks first (a thread of many matching messages can fill a short list on its own),
and while those hold fewer than k threads and more chunks exist it reads 4 times as many, up to
``search_group_max_candidates``. A hit on another document is a group of its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from core import metrics
from core.cache import search_key
from core.cursor import FINGERPRINT_BYTES, MAX_SEARCH_CURSOR_CHARS, search_position
from core.db import read_connection
from core.inputs import NO_NUL_PATTERN, NON_BLANK_PATTERN, JsonInt, JsonObject, UtcDatetime, no_nul
from core.pooler import CorePool
from core.replicas.reader import read
from core.search.bm25 import KEYWORD_SQL
from core.search.fusion import Hit, Ranking, escalated, rank_hybrid, rank_one
from core.search.page import Paging, next_cursor, page_of, wants_text
from core.search.tenantindex import OWN_INDEX_SQL, tenant_index_name
from core.spaces.follow import SpaceEmbedder, query_vector, space_changed

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from core.cache import Cache, PendingGet
    from core.embed import Embedder
    from core.replicas.reader import ReplicaSet
    from core.tenants import Principal

MAX_QUERY_CHARS = 4000


class Mode(StrEnum):
    hybrid = "hybrid"
    vector = "vector"
    keyword = "keyword"


class GroupBy(StrEnum):
    thread = "thread"


class Filters(BaseModel):
    """Narrowing a search: every filter given must hold (``metadata``: the document's metadata
    contains this object, as PostgreSQL's ``@>``)."""

    model_config = ConfigDict(extra="forbid")

    metadata: JsonObject | None = Field(None, description="documents whose metadata contains this object")
    external_ids: list[Annotated[str, Field(json_schema_extra={"pattern": NO_NUL_PATTERN}),
                                 AfterValidator(no_nul)]] | None = Field(None, max_length=1000)
    created_after: UtcDatetime | None = Field(None, description="created at or after (a time without offset is UTC)")
    created_before: UtcDatetime | None = Field(None, description="created before")


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, json_schema_extra={"pattern": NON_BLANK_PATTERN},
                       description="words, as people type them into a search box")
    k: JsonInt = Field(10, ge=1, description="how many results (at most the setting `search_max_k`)")
    mode: Mode = Mode.hybrid
    filters: Filters | None = None
    group_by: GroupBy | None = Field(None, description="`thread`: k threads, each its best chunk and "
                                     "`matched_messages`; a hit on another document is a group of its own")
    cursor: str | None = Field(None, min_length=1, max_length=MAX_SEARCH_CURSOR_CHARS,
                               description="`next_cursor` of the page before, with the same query, mode, "
                               "filters and group_by (k may change): the next hits, none already given "
                               "(README: pages of a search)")

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v:
            raise ValueError("query must not be blank")
        if "\x00" in v:
            raise ValueError("query must not contain NUL characters")
        return v

    def canonical(self, exclude: frozenset[str] = frozenset()) -> str:
        """The normalized request as compact, sorted JSON (without the fields ``exclude`` names):
        what the query log counts."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True, exclude=set(exclude)), sort_keys=True,
                          separators=(",", ":"))

    def digest(self, ranking: Ranking, fields: tuple[str, ...] | None = None, size: int | None = None) -> str:
        """A stable digest of the normalized request ranked by ``ranking``, the hit ``fields`` answered
        and the page's ``size`` when it is not ``k`` (a walk's last page, cut at its depth): the cache
        key's last part."""
        shown = ("" if fields is None else "\n" + ",".join(fields)) + ("" if size in (None, self.k) else f"\n{size}")
        return hashlib.sha256(f"{self.canonical()}\n{ranking.fingerprint}{shown}".encode()).hexdigest()[:32]

    def fingerprint(self) -> bytes:
        """What a search's pages share (the request but ``k`` and ``cursor``): its cursors carry it."""
        return hashlib.sha256(self.canonical(PAGE_FREE).encode()).digest()[:FINGERPRINT_BYTES]


PAGE_FREE = frozenset({"k", "cursor"})  # what may change from one page of a search to the next


EMAIL_PREFIX = "email:"  # core.ingest.mail: the documents e-mail becomes


def group_by_thread(hits: list[Hit], threads: dict[str, int], k: int) -> list[tuple[Hit, int | None, int]]:
    """The first ``k`` groups of ranked ``hits``: (best hit, thread id or None, distinct messages of
    it among ``hits``). ``threads``: thread per e-mail external id; any other hit is its own group (pure)."""
    groups: dict[tuple[str, int], tuple[Hit, int | None, set[int]]] = {}
    for hit in hits:
        thread = threads.get(hit.external_id)
        key = ("thread", thread) if thread is not None else ("document", hit.document_id)
        if key not in groups:
            groups[key] = (hit, thread, set())
        groups[key][2].add(hit.document_id)
    return [(hit, thread, len(members)) for hit, thread, members in list(groups.values())[:k]]


THREADS_OF_SQL = "SELECT message_id, thread_id FROM mail_messages WHERE company_id = %s AND message_id = ANY(%s)"


def threads_of(conn: Any, company_id: int, hits: list[Hit]) -> dict[str, int]:
    """The thread of each e-mail among ``hits``, by external id (one index lookup each, one statement)."""
    ids = sorted({h.external_id.removeprefix(EMAIL_PREFIX) for h in hits if h.external_id.startswith(EMAIL_PREFIX)})
    if not ids:
        return {}
    rows = conn.execute(THREADS_OF_SQL, (company_id, ids), prepare=True).fetchall()
    return {EMAIL_PREFIX + r[0]: int(r[1]) for r in rows}


def _filters(filters: Filters | None) -> tuple[sql.Composable, dict[str, Any]]:
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if filters is not None:
        if filters.metadata:
            clauses.append(sql.SQL("metadata @> %(f_metadata)s"))
            params["f_metadata"] = Jsonb(filters.metadata)
        if filters.external_ids is not None:
            clauses.append(sql.SQL("external_id = ANY(%(f_external_ids)s)"))
            params["f_external_ids"] = filters.external_ids
        if filters.created_after is not None:
            clauses.append(sql.SQL("created_at >= %(f_after)s"))
            params["f_after"] = filters.created_after
        if filters.created_before is not None:
            clauses.append(sql.SQL("created_at < %(f_before)s"))
            params["f_before"] = filters.created_before
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL(" AND ") + sql.SQL(" AND ").join(clauses), params


# the query vector's space must be the active one (core.spaces): checked once per statement, in its
# snapshot, so a switch committed before the statement makes it fail (SQLSTATE OPS01) and never
# compares a query of one space with vectors of another; NULL (library callers) is not checked
SPACE_CHECK = "(%(space)s::bigint IS NULL OR vector_space_is(%(space)s))"


# {body}: the chunk's text (``c.body``), or NULL when the answer does not show it (``fields``)
VECTOR_SQL = """
WITH hits AS MATERIALIZED (
    SELECT c.id, c.document_id, c.external_id, {body}, embedding <=> %(q)s AS distance
    FROM chunks c WHERE company_id = %(company)s AND """ + SPACE_CHECK + """ {filters}
    ORDER BY embedding <=> %(q)s LIMIT %(n)s
)
SELECT id, document_id, external_id, body, 1 - distance FROM hits ORDER BY distance, id
"""

# No ORDER BY inside the fence, so no index can order the rows: every row of the company is compared.
# Only ids and distances are kept while scanning; the k winners' texts are read by primary key.
EXACT_VECTOR_SQL = """
WITH scored AS MATERIALIZED (
    SELECT id, created_at, embedding <=> %(q)s AS distance
    FROM chunks WHERE company_id = %(company)s AND """ + SPACE_CHECK + """ {filters}
), top AS (
    SELECT id, created_at, distance FROM scored ORDER BY distance, id LIMIT %(n)s
)
SELECT c.id, c.document_id, c.external_id, {body}, 1 - top.distance
FROM top JOIN chunks c ON c.company_id = %(company)s AND c.id = top.id AND c.created_at = top.created_at
ORDER BY top.distance, top.id
"""

# How many chunks a company holds, counted no further than the exact-search limit.
COMPANY_ROWS_SQL = "SELECT count(*) FROM (SELECT 1 FROM chunks WHERE company_id = %s LIMIT %s) s"
COMPANY_ROWS_TTL = 60  # seconds a count is trusted: a company crosses the limit slowly


def use_exact(company_rows: int, exact_max_rows: int) -> bool:
    """Search exactly when the company holds at most ``exact_max_rows`` chunks (pure)."""
    return exact_max_rows > 0 and company_rows <= exact_max_rows

HYBRID_SQL = """
WITH v AS MATERIALIZED ({vector}), kw AS MATERIALIZED ({keyword})
SELECT 'v', * FROM v UNION ALL SELECT 'k', * FROM kw
"""


def vector_sql(exact: bool, company_id: int | None = None) -> str:
    """The vector query; with ``company_id``, the graph search names the company as a constant, so the
    planner can use the company's own partial index (``core.search.tenantindex``) in every plan."""
    if exact:
        return EXACT_VECTOR_SQL
    if company_id is None:
        return VECTOR_SQL
    return VECTOR_SQL.replace("company_id = %(company)s", f"company_id = {int(company_id)}")


def hybrid_sql(exact: bool, company_id: int | None = None) -> str:
    return HYBRID_SQL.format(vector=vector_sql(exact, company_id), keyword=KEYWORD_SQL)


TEXT = {True: sql.SQL("c.body"), False: sql.SQL("NULL::text AS body")}  # the {body} of the queries above


def vector_query(exact: bool, company_id: int | None = None, filters: sql.Composable = sql.SQL(""),
                 text: bool = True) -> sql.Composed:
    """``vector_sql`` with its ``{filters}`` (``_filters``; none by default) and ``{body}`` (the chunks'
    texts, or NULL without ``text``) filled in: the one way to run it, here and in tools and benches."""
    return sql.SQL(vector_sql(exact, company_id)).format(filters=filters, body=TEXT[text])


def _hits(rows: list[tuple[Any, ...]]) -> list[Hit]:
    return [Hit(int(r[0]), int(r[1]), r[2], r[3], float(r[4])) for r in rows]


def candidates(conn: Any, embedder: Embedder | None, company_id: int, req: SearchRequest, exact: bool, n: int,
               embedded: tuple[Any, int | None] | None = None,
               ranking: Ranking = Ranking(), text: bool = True) -> tuple[list[Hit], list[Hit]]:
    """The chunk candidates of ``req``'s mode: (vector, keyword), up to ``n`` each, best first (the
    half a mode does not use is empty); ``exact``, ``embedded``, ``ranking`` and ``text``: as ``retrieve``."""
    where, params = _filters(req.filters)
    params.update(company=company_id, text=req.query, k1=ranking.bm25.k1, b=ranking.bm25.b,
                  title_weight=ranking.title_weight, n=n)
    parts = {"filters": where, "body": TEXT[text]}
    if req.mode is Mode.keyword:
        return [], _hits(conn.execute(sql.SQL(KEYWORD_SQL).format(**parts), params).fetchall())
    params["q"], params["space"] = embed_query(embedder, req.query) if embedded is None else embedded
    if req.mode is Mode.vector:
        return _hits(conn.execute(vector_query(exact, company_id, where, text), params).fetchall()), []
    rows = conn.execute(sql.SQL(hybrid_sql(exact, company_id)).format(**parts), params).fetchall()
    vector = sorted(_hits([r[1:] for r in rows if r[0] == "v"]), key=lambda h: (-h.score, h.chunk_id))
    keyword = sorted(_hits([r[1:] for r in rows if r[0] == "k"]), key=lambda h: (-h.score, h.chunk_id))
    return vector, keyword


def retrieve(conn: Any, embedder: Embedder | None, company_id: int, req: SearchRequest,
             exact: bool = False, n: int | None = None, embedded: tuple[Any, int | None] | None = None,
             ranking: Ranking = Ranking(), text: bool = True, ef_search: int | None = None) -> list[Hit]:
    """The company's top ``n`` (default k) for ``req``; ``exact``: vector candidates by comparing
    every row; ``embedded``: the query's (vector, space) from ``embed_query``, when the caller has it
    already; ``ranking``: the ranking's parameters (``core.search.fusion``: title weight, per
    document, fusion); ``text``: read the chunks' texts (else the hits' ``text`` is None);
    ``ef_search``: how many rows the HNSW read answers in exact order, its ef_search when the read is
    a company's own graph without filters (None or 0: not known, the whole depth is read; the shared
    graph's first batch mixes companies). One mode per document reads ``first_depth``
    chunks, deeper only while they hold fewer than ``n`` documents: the same hits as reading ``depth``."""
    n = req.k if n is None else n
    if req.mode is not Mode.keyword and embedded is None:
        embedded = embed_query(embedder, req.query)  # once, however deep the reads go
    if req.mode is Mode.hybrid:
        vector, keyword = candidates(conn, embedder, company_id, req, exact, ranking.depth(n), embedded, ranking, text)
        return rank_hybrid(vector, keyword, ranking, n)

    def ranked(depth: int) -> tuple[int, list[Hit]]:
        vector, keyword = candidates(conn, embedder, company_id, req, exact, depth, embedded, ranking, text)
        return len(vector or keyword), rank_one(vector or keyword, ranking, n)

    ordered = None if exact or req.mode is Mode.keyword else (ef_search or 0)
    return escalated(ranked, ranking.first_depth(n, False, ordered), ranking.depth(n, False), n)


def embed_query(embedder: Embedder | None, query: str) -> tuple[Any, int | None]:
    """The query's vector and the vector space it is in (``core.spaces.follow.query_vector``)."""
    assert embedder is not None
    started = time.perf_counter()
    found = query_vector(embedder, query)
    metrics.EMBED_SECONDS.labels(embedder.name).observe(time.perf_counter() - started)
    return found


def retrieve_grouped(conn: Any, embedder: Embedder | None, company_id: int, req: SearchRequest, exact: bool,
                     max_candidates: int, ranking: Ranking = Ranking(), k: int | None = None,
                     text: bool = True, ef_search: int | None = None) -> list[dict[str, Any]]:
    """``group_by: thread``: ``k`` (default ``req.k``) groups from 10·k candidates, 4 times more while
    short (module docstring)."""
    k = req.k if k is None else k
    vector = None if req.mode is Mode.keyword else embed_query(embedder, req.query)

    def grouped(n: int) -> tuple[int, list[tuple[Hit, int | None, int]]]:
        hits = retrieve(conn, embedder, company_id, req, exact, n, vector, ranking, text, ef_search)
        return len(hits), group_by_thread(hits, threads_of(conn, company_id, hits), k)

    groups = escalated(grouped, max(k, min(k * 10, max_candidates)), max_candidates, k)
    return [hit.as_dict(thread, matched) for hit, thread, matched in groups]


def retrieve_answer(conn: Any, embedder: Embedder | None, company_id: int, req: SearchRequest, exact: bool,
                    max_candidates: int, ranking: Ranking = Ranking(), k: int | None = None,
                    text: bool = True, ef_search: int | None = None) -> list[dict[str, Any]]:
    """The top ``k`` (default ``req.k``) results of ``req`` as the API answers them: hits on e-mail
    with their thread, or groups; ``text``, ``ef_search``: as ``retrieve``."""
    if req.group_by is GroupBy.thread:
        return retrieve_grouped(conn, embedder, company_id, req, exact, max_candidates, ranking, k, text, ef_search)
    hits = retrieve(conn, embedder, company_id, req, exact, k, ranking=ranking, text=text, ef_search=ef_search)
    threads = threads_of(conn, company_id, hits)
    return [h.as_dict(threads.get(h.external_id)) for h in hits]


def _kept(conn: Any, cache: Cache, key: str, query: str, params: tuple[Any, ...]) -> Any:
    """The value of ``query`` (one row of one column), kept in this process for ``COMPANY_ROWS_TTL``."""
    now = time.monotonic()
    found = cache.local.get(key, COMPANY_ROWS_TTL, now)
    if found is None:
        found = conn.execute(query, params, prepare=True).fetchone()[0]
        cache.local.put(key, found, COMPANY_ROWS_TTL, now)
    return found


def has_own_index(conn: Any, cache: Cache, company_id: int) -> bool:
    """Whether the company's own HNSW index is complete (``opsctl index tenants``), kept in this
    process for a minute: until then a company just moved is searched as before, still correctly."""
    return bool(_kept(conn, cache, f"own-index:{company_id}", OWN_INDEX_SQL, (tenant_index_name(company_id),)))


def company_rows(conn: Any, cache: Cache, company_id: int, limit: int) -> int:
    """The company's chunk count up to ``limit`` + 1, kept in this process for a minute."""
    return int(_kept(conn, cache, f"rows:{company_id}:{limit}", COMPANY_ROWS_SQL, (company_id, limit + 1)))


def search(pool: ConnectionPool, cache: Cache, embedder: Embedder, principal: Principal, req: SearchRequest,
           ttl: int, exact_max_rows: int, max_candidates: int = 2000,
           replicas: ReplicaSet | None = None, ranking: Ranking = Ranking(),
           ahead: PendingGet | None = None, fields: tuple[str, ...] | None = None,
           depth: int | None = None, conn: Any = None) -> dict[str, Any]:
    """Answer a search from the cache when the company's data has not changed, else from the database.

    ``exact_max_rows`` is the setting ``vector_exact_max_rows`` (0: always HNSW); ``max_candidates``
    ``search_group_max_candidates``; ``ranking``: the ranking settings (``Ranking.of``); ``replicas``: read
    from one when it is fresh enough (``core.replicas.reader.read``: never older than ``principal.data_version``).
    ``fields``: the hit fields answered (``core.search.page.parse_fields``; None: all); ``depth``: the
    most hits a walk of pages answers (``core.search.page``; None: ``req.k``, no second page); ``conn``:
    a connection of ``pool`` the request holds (its key lookup's, in autocommit), read with instead of
    a second checkout.
    A ``req.cursor`` not issued for this search and company raises ``core.cursor.CursorRefused``.
    From the cache (this process's near cache, then Redis), ``results`` is the stored JSON as an
    ``orjson.Fragment``: encode the answer with ``orjson.dumps`` (the API's ``OrjsonResponse``). The
    cached value is the page's cursor (JSON), a newline, then the results."""
    started = time.perf_counter()
    position = None if req.cursor is None else search_position(req.cursor, principal.company_id, req.fingerprint())
    paging = Paging(req.k, req.k if depth is None else depth, position)
    if paging.size == 0:  # the walk reached its depth: nothing to read
        return {"results": [], "next_cursor": None, "cached": False, "took_ms": 0.0}
    key = search_key(principal.company_id, principal.data_version, req.digest(ranking, fields, paging.size))
    # ``ahead``: the cache read the route sent while authenticating (core.search.ahead), if for this key
    cached, _ = ahead.result() if ahead is not None and ahead.key == key else cache.get_raw(key, near_ttl=ttl)
    more, sep, stored = (cached or b"").partition(b"\n")
    if sep:  # the stored JSON goes out as it is: no parse, no re-encode
        took = (time.perf_counter() - started) * 1000
        metrics.SEARCH_SECONDS.labels(req.mode.value, "true").observe(took / 1000)
        return {"results": orjson.Fragment(stored), "next_cursor": next_cursor(paging, orjson.loads(more)),
                "cached": True, "took_ms": round(took, 3)}

    # the HNSW read's ef_search: how deep its answer is in exact order (Ranking.first_depth)
    ef_search = pool.ef_search(principal.ef_search) if isinstance(pool, CorePool) else principal.ef_search

    def answer(conn: Any) -> list[dict[str, Any]]:
        own = req.mode is not Mode.keyword and has_own_index(conn, cache, principal.company_id)
        exact = req.mode is not Mode.keyword and exact_max_rows > 0 and not own and use_exact(
            company_rows(conn, cache, principal.company_id, exact_max_rows), exact_max_rows)
        # Only a company's own graph, unfiltered, answers its first ef_search rows in exact order: the
        # shared graph's sorted batch holds every company's rows, those of others (and rows a filter
        # drops) are skipped after it, and the iterative scan returns the rest in relaxed order.
        ordered = ef_search if own and req.filters is None else 0
        return retrieve_answer(conn, embedder, principal.company_id, req, exact, max_candidates, ranking,
                               paging.read, wants_text(fields), ordered)

    def read_answer() -> list[dict[str, Any]]:
        # the primary: single statements in autocommit (no BEGIN/ROLLBACK round trips); a replica: one snapshot
        return read(pool, replicas, principal.company_id, principal.data_version, answer,
                    vector=req.mode is not Mode.keyword, ef_search=principal.ef_search, conn=conn)[0]

    try:
        ranked = read_answer()
    except Exception as exc:
        # the active vector space changed since this process last looked: follow it, answer in it
        if not space_changed(exc) or not isinstance(embedder, SpaceEmbedder):
            raise
        # on the connection the request holds (``read_answer`` reads ``conn`` again: never rebind it)
        with read_connection(pool, conn) as held:
            embedder.refresh(held)
        ranked = read_answer()
    results, cursor = page_of(ranked, paging, principal.company_id, req.fingerprint(), req.group_by is not None,
                              ranking.per_document, fields)
    # near now, Redis off this request's path
    cache.set_raw_later(key, orjson.dumps(cursor) + b"\n" + orjson.dumps(results), ttl)
    took = (time.perf_counter() - started) * 1000
    metrics.SEARCH_SECONDS.labels(req.mode.value, "false").observe(took / 1000)
    return {"results": results, "next_cursor": next_cursor(paging, cursor), "cached": False, "took_ms": round(took, 3)}
