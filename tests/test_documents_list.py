"""``GET /v1/documents``: keyset pages over the partitioned table, stable while documents are ingested."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest

from core.cursor import CursorRefused, listing_cursor, listing_position, search_cursor
from core.documents import LIST_SQL, page_of
from tests.conftest import RunningApi, client_for, drain
from tests.test_bad_input import assert_error

MONTHS = ("2026-01", "2026-02", "2026-03")


def partitioned(conn: psycopg.Connection[Any]) -> None:
    """Monthly partitions of past months besides the default and the premade ones (``documents_pYYYY_MM``)."""
    for i, month in enumerate(MONTHS):
        end = MONTHS[i + 1] if i + 1 < len(MONTHS) else "2026-04"
        name = "documents_" + month.replace("-", "_")
        conn.execute(f"CREATE TABLE {name} PARTITION OF documents FOR VALUES FROM ('{month}-01') TO ('{end}-01')")


def seed(conn: psycopg.Connection[Any], company_id: int, ids: list[str]) -> None:
    """Documents written as the worker writes them, spread over the partitions and the default one."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO documents (company_id, external_id, title, body, content_hash, created_at) "
            "VALUES (%s, %s, %s, %s, '\\x00', %s)",
            [(company_id, eid, f"title {eid}", f"text of {eid} é", f"{MONTHS[n % 3]}-15" if n % 4 else "2030-06-01")
             for n, eid in enumerate(ids)])


def walk(client: Any, limit: int, between: Any = None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        response = client.get("/v1/documents", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["documents"]) <= limit
        seen.extend(page["documents"])
        cursor = page["next_cursor"]
        pages += 1
        if cursor is None:
            return seen
        assert len(page["documents"]) == limit, "a page short of the limit ends the walk"
        if between is not None:
            between(pages)


def test_a_walk_lists_every_document_once_in_external_id_order(api: RunningApi, tenant: Any, other_tenant: Any,
                                                               conn: psycopg.Connection[Any]) -> None:
    partitioned(conn)
    ids = [f"doc-{n:04d}" for n in range(250)]
    seed(conn, tenant.company_id, ids)
    seed(conn, other_tenant.company_id, [f"other-{n}" for n in range(40)])
    with client_for(api, tenant.api_key) as client:
        listed = walk(client, 100)
    assert [d["external_id"] for d in listed] == ids
    first = listed[0]
    assert set(first) == {"document_id", "external_id", "title", "metadata", "created_at", "updated_at", "bytes"}
    assert first["bytes"] == len("text of doc-0000 é".encode()), "UTF-8 bytes, not characters"
    with client_for(api, other_tenant.api_key) as client:
        assert [d["external_id"] for d in walk(client, 7)] == sorted(f"other-{n}" for n in range(40))


def test_documents_ingested_updated_and_deleted_while_walking(api: RunningApi, tenant: Any, db_url: str,
                                                              conn: psycopg.Connection[Any]) -> None:
    """Every document that exists for the whole walk is listed exactly once, though others are
    inserted before and after the cursor and it is itself updated (a new row, a new id) meanwhile."""
    partitioned(conn)
    steady = [f"m-{n:03d}" for n in range(0, 300, 2)]
    doomed = [f"m-{n:03d}" for n in range(1, 300, 10)]
    seed(conn, tenant.company_id, steady + doomed)

    def ingest_meanwhile(page: int) -> None:
        with client_for(api, tenant.api_key) as client:
            documents = [{"external_id": f"m-{n:03d}a{page}", "text": f"new {page}"} for n in range(0, 300, 15)]
            documents += [{"external_id": eid, "text": f"updated on page {page}", "created_at": "2026-03-02T00:00:00Z"}
                          for eid in steady[page * 7: page * 7 + 20]]  # before and after the cursor, moved
            response = client.post("/v1/documents", json={"documents": documents})
            assert response.status_code == 202, response.text
            gone = doomed[page * 3: page * 3 + 3]
            for eid in gone:
                assert client.delete(f"/v1/documents/{eid}").status_code == 202
        drain(api.settings, db_url)

    with client_for(api, tenant.api_key) as client:
        listed = [d["external_id"] for d in walk(client, 25, ingest_meanwhile)]
    assert len(listed) == len(set(listed)), "no document twice"
    assert set(steady) <= set(listed), "none that existed throughout is lost"
    assert listed == sorted(listed)
    updated = conn.execute("SELECT count(*) FROM documents WHERE company_id = %s AND body LIKE 'updated%%'",
                           (tenant.company_id,)).fetchone()
    assert updated is not None and updated[0] > 20, "the walk really ran over updates"


def test_a_cursor_edited_or_from_elsewhere_is_a_400(api: RunningApi, tenant: Any, other_tenant: Any,
                                                   conn: psycopg.Connection[Any]) -> None:
    seed(conn, tenant.company_id, [f"d{n}" for n in range(5)])
    with client_for(api, tenant.api_key) as client:
        good = client.get("/v1/documents", params={"limit": 2}).json()["next_cursor"]
        raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
        raw[12] ^= 1
        edited = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        foreign = listing_cursor(other_tenant.company_id, "d1")
        of_search = search_cursor(tenant.company_id, b"\0" * 16, [])
        for cursor, says in [(edited, "damaged or edited"), (foreign, "another company"), ("!!", "not base64url"),
                             (of_search, "issued by POST /v1/search"), ("", "damaged"), ("é", "not base64url")]:
            error = assert_error(client.get("/v1/documents", params={"cursor": cursor}), 400, "invalid_cursor")
            assert says in error["message"], (cursor, error)
        for limit in (0, 1001):
            assert "limit" in assert_error(client.get("/v1/documents", params={"limit": limit}), 422,
                                           "validation_error")["message"]
        second = client.get("/v1/documents", params={"limit": 2, "cursor": good}).json()
    assert [d["external_id"] for d in second["documents"]] == ["d2", "d3"]


@pytest.mark.parametrize(("rows", "limit", "more"), [(0, 10, False), (3, 10, False), (10, 10, False), (11, 10, True)])
def test_a_page_has_a_cursor_only_when_a_row_follows(rows: int, limit: int, more: bool) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    page = page_of([(n, f"e{n:02d}", None, {}, now, now, 1) for n in range(rows)], limit, 7)
    assert len(page["documents"]) == min(rows, limit)
    assert (page["next_cursor"] is not None) is more
    if more:
        assert listing_position(page["next_cursor"], 7) == f"e{limit - 1:02d}"
        with pytest.raises(CursorRefused, match="another company"):
            listing_position(page["next_cursor"], 8)


def test_a_page_is_index_scans_of_every_partition_never_a_sort(tenant: Any, other_tenant: Any,
                                                                conn: psycopg.Connection[Any]) -> None:
    """The keyset is served by documents_external_id_idx on each partition, merged in order (no
    sequential scan, no sort of the company's rows), however deep the cursor."""
    partitioned(conn)
    seed(conn, tenant.company_id, [f"doc-{n:05d}" for n in range(3000)])
    seed(conn, other_tenant.company_id, [f"doc-{n:05d}" for n in range(3000)])
    conn.execute("ANALYZE documents")
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + LIST_SQL, (tenant.company_id, "doc-02000", 101)))
    assert "Merge Append" in plan, plan
    assert plan.count("Index Scan using") >= len(MONTHS) + 1, plan  # every partition, the default included
    assert "external_id_idx" in plan, plan
    nodes = [line.strip().removeprefix("->").strip().split("  (")[0] for line in plan.splitlines() if "(cost=" in line]
    assert not [n for n in nodes if n.startswith(("Seq Scan", "Sort", "Incremental Sort"))], plan
