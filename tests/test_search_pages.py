"""Search pages (``cursor`` / ``next_cursor``) and hit fields (``?fields=``): tables, then the real API."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.cursor import SearchPosition, hit_key, listing_cursor, search_cursor, search_position
from core.search.fusion import Ranking
from core.search.page import (
    HIT_FIELDS,
    Paging,
    UnknownField,
    hit_identity,
    next_cursor,
    page_of,
    parse_fields,
    project,
)
from core.search.retrieve import SearchRequest, retrieve
from tests.conftest import RunningApi, client_for, drain
from tests.test_bad_input import assert_error

HIT = {"document_id": 7, "external_id": "kb-1", "chunk_id": 70, "text": "t", "score": 0.5}


@pytest.mark.parametrize(("value", "fields"), [
    (None, None),
    ("external_id", ("external_id",)),
    ("score,external_id", ("external_id", "score")),          # the order of HIT_FIELDS
    ("text, score ,text", ("text", "score")),
    (",".join(HIT_FIELDS), HIT_FIELDS),
])
def test_parse_fields(value: str | None, fields: tuple[str, ...] | None) -> None:
    assert parse_fields(value) == fields


@pytest.mark.parametrize("value", ["", "title", "external_id,", "external_id,nope", "EXTERNAL_ID", "*"])
def test_unknown_fields_are_refused_naming_the_known_ones(value: str) -> None:
    with pytest.raises(UnknownField, match="known: document_id, external_id, chunk_id, text, score"):
        parse_fields(value)


def test_project_keeps_only_the_fields_a_hit_has() -> None:
    assert project(HIT, None) is HIT
    assert project(HIT, ("external_id", "score")) == {"external_id": "kb-1", "score": 0.5}
    assert project(HIT, ("external_id", "thread_id")) == {"external_id": "kb-1"}, "thread_id: mail only"


@pytest.mark.parametrize(("hit", "grouped", "per_document", "identity"), [
    (HIT, False, True, "document:kb-1"),                      # an update (new document id) is the same hit
    (HIT, False, False, "chunk:70"),
    ({**HIT, "thread_id": 3}, True, True, "thread:3"),
    ({**HIT, "thread_id": 3}, False, True, "document:kb-1"),  # mail not grouped: per document
    (HIT, True, True, "document:kb-1"),                       # grouped, not mail: its own group
])
def test_hit_identity(hit: dict[str, Any], grouped: bool, per_document: bool, identity: str) -> None:
    assert hit_identity(hit, grouped, per_document) == identity


def position(*external_ids: str) -> SearchPosition:
    return SearchPosition(b"f" * 16, tuple(hit_key("document:" + e) for e in external_ids))


@pytest.mark.parametrize(("paging", "size", "read"), [
    (Paging(10, 100), 10, 11),
    (Paging(10, 100, position("a", "b")), 10, 13),
    (Paging(10, 12, position("a", "b", "c")), 9, 13),            # the depth cuts the last page
    (Paging(10, 3, position("a", "b", "c")), 0, 4),              # at the depth: nothing to answer
    (Paging(10, 2, position("a", "b", "c")), 0, 4),              # past it (the tier's k lowered)
])
def test_paging_sizes(paging: Paging, size: int, read: int) -> None:
    assert (paging.size, paging.read) == (size, read)


def ranked(*external_ids: str) -> list[dict[str, Any]]:
    return [{**HIT, "external_id": e} for e in external_ids]


@pytest.mark.parametrize(("given", "ranking", "k", "depth", "page", "more", "answered"), [
    ((), "abcd", 2, 100, "ab", True, True),
    ((), "ab", 2, 100, "ab", False, False),                      # exactly k: the walk is complete
    (("a", "b"), "abcde", 2, 100, "cd", True, True),
    (("a", "b"), "xabcd", 2, 100, "xc", True, True),             # x rose above those given: next, not lost
    (("a", "b"), "cbd", 2, 100, "cd", False, False),             # a fell out of the ranking: never again
    (("a", "b"), "abcde", 2, 4, "cd", True, False),              # the depth reached: no next page
    (("a", "b", "c"), "abcde", 2, 4, "d", True, False),
])
def test_a_page_never_repeats_a_hit(given: tuple[str, ...], ranking: str, k: int, depth: int, page: str,
                                    more: bool, answered: bool) -> None:
    paging = Paging(k, depth, position(*given) if given else None)
    hits, cursor = page_of(ranked(*ranking), paging, 5, b"f" * 16, False, True, ("external_id",))
    assert "".join(h["external_id"] for h in hits) == page
    assert (cursor is not None) is more
    assert (next_cursor(paging, cursor) is not None) is answered
    if cursor is not None:
        after = search_position(cursor, 5, b"f" * 16)
        assert after.keys == tuple(hit_key("document:" + e) for e in (*given, *page))


def test_a_cursor_belongs_to_one_search_of_one_company() -> None:
    req = SearchRequest(query="refunds  policy", k=3, mode="keyword")
    same = SearchRequest(query="refunds policy", k=7, mode="keyword", cursor="x")
    assert req.fingerprint() == same.fingerprint(), "k and cursor may change from page to page"
    for other in (SearchRequest(query="refund policy", k=3, mode="keyword"), SearchRequest(query="refunds policy"),
                  SearchRequest(query="refunds policy", mode="keyword", filters={"metadata": {"a": 1}})):
        assert other.fingerprint() != req.fingerprint()
    r = Ranking()
    assert req.digest(r) != same.digest(r), "each page its own cache entry"
    assert req.digest(r) != req.digest(r, ("external_id",)) != req.digest(r, None, 2)
    assert req.digest(r, None, 3) == req.digest(r), "a full page is keyed as before"


def test_a_cursor_at_the_deepest_a_tier_allows_is_taken_back() -> None:
    """A tier may allow k up to 10,000 (maxK) and the setting search_max_k has no ceiling: the cursor of a
    walk that deep (a key per hit given) must pass the request's checks, or its next page is a 422."""
    from core.tiers import Tier

    depth = max(m.le for m in Tier.model_fields["max_k"].metadata if hasattr(m, "le"))
    fingerprint = SearchRequest(query="refunds", mode="keyword").fingerprint()
    keys = [hit_key(f"chunk:{n}") for n in range(depth - 1)]
    token = search_cursor(7, fingerprint, keys)
    request = SearchRequest(query="refunds", mode="keyword", cursor=token)
    position = search_position(request.cursor or "", 7, fingerprint)
    assert position.count == depth - 1


# -- the real API ---------------------------------------------------------------------------------------------

WORDS = ["refund", "parcel", "invoice", "password", "warranty", "delivery"]


def corpus(n: int, tag: str = "") -> list[dict[str, Any]]:
    """Documents all matching `refund`, each with its own number of repeats (a strict keyword order)."""
    return [{"external_id": f"doc-{i:03d}{tag}", "title": f"Doc {i}",
             "text": " ".join(["refund"] * (1 + i % 7) + [WORDS[i % len(WORDS)]] * 5 + [f"word{i}"] * 3)}
            for i in range(n)]


def ingest(api: RunningApi, key: str, db_url: str, docs: list[dict[str, Any]]) -> None:
    with client_for(api, key) as client:
        assert client.post("/v1/documents", json={"documents": docs}).status_code == 202
    drain(api.settings, db_url)


def walk(client: Any, body: dict[str, Any], between: Any = None, **params: str) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        response = client.post("/v1/search", json={**body, **({"cursor": cursor} if cursor else {})}, params=params)
        assert response.status_code == 200, response.text
        answer = response.json()
        pages.append(answer["results"])
        cursor = answer["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50
        if between is not None:
            between(len(pages))


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_pages_are_the_ranking_in_slices_when_nothing_changes(api: RunningApi, tenant: Any, db_url: str,
                                                              mode: str) -> None:
    ingest(api, tenant.api_key, db_url, corpus(30))
    with client_for(api, tenant.api_key) as client:
        whole = client.post("/v1/search", json={"query": "refund", "k": 26, "mode": mode}).json()["results"]
        pages = walk(client, {"query": "refund", "k": 4, "mode": mode})
    assert [len(p) for p in pages][:-1] == [4] * (len(pages) - 1)
    walked = [hit["external_id"] for page in pages for hit in page]
    assert walked[:26] == [hit["external_id"] for hit in whole]
    assert len(walked) == len(set(walked)) == 30 if mode == "keyword" else len(walked) == len(set(walked))


def test_no_hit_twice_while_documents_are_ingested_and_updated(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, db_url, corpus(40))
    given: list[str] = []

    def meanwhile(page: int) -> None:
        # strong new matches, and the hits already given updated (a new document id each)
        fresh = [{"external_id": f"new-{page}-{i}", "text": "refund " * 12} for i in range(3)]
        again = [{"external_id": e, "text": "refund " * 20 + f"updated {page}"} for e in given[-4:]]
        ingest(api, tenant.api_key, db_url, fresh + again)

    with client_for(api, tenant.api_key) as client:
        pages = []
        cursor = None
        while True:
            response = client.post("/v1/search", json={"query": "refund", "k": 5, "mode": "keyword",
                                                       **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.text
            answer = response.json()
            pages.append([h["external_id"] for h in answer["results"]])
            given.extend(pages[-1])
            cursor = answer["next_cursor"]
            if cursor is None:
                break
            meanwhile(len(pages))
    assert len(given) == len(set(given)), pages
    assert {d["external_id"] for d in corpus(40)} <= set(given), "every document there throughout is answered"
    assert any(e.startswith("new-") for e in given), "new documents that rank high come on later pages"
    assert len(given) <= 100, "never deeper than the setting search_max_k"


def test_the_depth_is_the_tiers_k_and_pages_are_cached(settings: Any, tenant: Any, db_url: str) -> None:
    api = RunningApi(settings.model_copy(update={"search_max_k": 10}))
    try:
        ingest(api, tenant.api_key, db_url, corpus(30))
        with client_for(api, tenant.api_key) as client:
            pages = walk(client, {"query": "refund", "k": 4, "mode": "keyword"}, fields="external_id")
            assert [len(p) for p in pages] == [4, 4, 2]
            first = client.post("/v1/search", json={"query": "refund", "k": 4, "mode": "keyword"}).json()
            again = client.post("/v1/search", json={"query": "refund", "k": 4, "mode": "keyword",
                                                    "cursor": first["next_cursor"]})
            repeat = client.post("/v1/search", json={"query": "refund", "k": 4, "mode": "keyword",
                                                     "cursor": first["next_cursor"]})
            assert repeat.json()["cached"] is True
            assert repeat.json()["results"] == again.json()["results"]
            assert repeat.json()["next_cursor"] == again.json()["next_cursor"] is not None
            assert_error(client.post("/v1/search", json={"query": "refund", "k": 11}), 422, "validation_error")
    finally:
        api.close()


def test_a_cursor_of_another_search_company_or_kind_is_a_400(api: RunningApi, tenant: Any, other_tenant: Any,
                                                            db_url: str) -> None:
    ingest(api, tenant.api_key, db_url, corpus(12))
    with client_for(api, tenant.api_key) as client:
        cursor = client.post("/v1/search", json={"query": "refund", "k": 3}).json()["next_cursor"]
        assert cursor
        assert client.post("/v1/search", json={"query": "refund", "k": 5, "cursor": cursor}).status_code == 200
        for body, says in [({"query": "parcel", "cursor": cursor}, "another search"),
                           ({"query": "refund", "mode": "keyword", "cursor": cursor}, "another search"),
                           ({"query": "refund", "cursor": cursor[:-2]}, "damaged"),
                           ({"query": "refund", "cursor": listing_cursor(tenant.company_id, "x")}, "GET /v1/documents"),
                           ({"query": "refund", "cursor": "*"}, "base64url")]:
            error = assert_error(client.post("/v1/search", json=body), 400, "invalid_cursor")
            assert says in error["message"], (body, error)
    with client_for(api, other_tenant.api_key) as client:
        error = assert_error(client.post("/v1/search", json={"query": "refund", "k": 3, "cursor": cursor}), 400,
                             "invalid_cursor")
        assert "another company" in error["message"]
        foreign = search_cursor(tenant.company_id, SearchRequest(query="refund").fingerprint(), [])
        assert_error(client.post("/v1/search", json={"query": "refund", "cursor": foreign}), 400, "invalid_cursor")


def test_fields_answer_only_those_keys(api: RunningApi, tenant: Any, db_url: str) -> None:
    ingest(api, tenant.api_key, db_url, corpus(5))
    with client_for(api, tenant.api_key) as client:
        full = client.post("/v1/search", json={"query": "refund", "k": 3}).json()["results"]
        slim = client.post("/v1/search", params={"fields": "external_id,score"},
                           json={"query": "refund", "k": 3}).json()["results"]
        assert slim == [{"external_id": h["external_id"], "score": h["score"]} for h in full]
        error = assert_error(client.post("/v1/search", params={"fields": "external_id,title"},
                                         json={"query": "refund"}), 400, "unknown_field")
        assert "'title'" in error["message"] and "known: document_id, external_id" in error["message"]
    with client_for(api, None) as client:  # no key: refused for that first, whatever the fields
        assert_error(client.post("/v1/search", params={"fields": "title"}, json={"query": "refund"}), 401)


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
@pytest.mark.parametrize("exact", [True, False])
def test_without_text_the_chunks_texts_are_not_read(api: RunningApi, tenant: Any, db_url: str,
                                                    conn: psycopg.Connection[Any], mode: str, exact: bool) -> None:
    ingest(api, tenant.api_key, db_url, corpus(8))
    req = SearchRequest(query="refund parcel", k=5, mode=mode)
    with_text = retrieve(conn, api.embedder, tenant.company_id, req, exact)
    without = retrieve(conn, api.embedder, tenant.company_id, req, exact, text=False)
    assert with_text and all(h.text for h in with_text)
    assert [h.chunk_id for h in without] == [h.chunk_id for h in with_text]
    assert all(h.text is None for h in without), "the SQL selected no body"


def test_pages_of_threads_never_repeat_a_thread(api: RunningApi, tenant: Any, db_url: str) -> None:
    from tests.email_helpers import post_email
    from tests.test_email_search import mail

    with client_for(api, tenant.api_key) as client:
        for t in range(5):
            post_email(client, mail(f"t{t}m0@x", "durian " * (t + 1)))
            for i in range(1, 4):
                post_email(client, mail(f"t{t}m{i}@x", "durian " * (t + 1), f"t{t}m{i - 1}@x"))
        client.post("/v1/documents", json={"documents": [{"external_id": f"doc{i}", "text": "durian"}
                                                         for i in range(3)]})
        drain(api.settings, db_url)
        pages = walk(client, {"query": "durian", "mode": "keyword", "k": 2, "group_by": "thread"})
    groups = [h.get("thread_id") or h["external_id"] for page in pages for h in page]
    assert len(groups) == len(set(groups)) == 8, pages  # 5 threads and 3 documents, each once
    assert all(h.get("matched_messages") in (None, 4) for page in pages for h in page)
