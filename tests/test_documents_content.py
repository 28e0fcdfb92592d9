"""``GET /v1/documents/{external_id}/content``: the stored text, plain or JSON, streamed when large."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from core.documents import TEXT_SLICE, text_pieces
from tests.conftest import RunningApi, client_for, drain
from tests.test_bad_input import assert_error
from tests.test_documents_list import seed

TEXT = "Refunds are issued within 14 days.\nÉtage 3 — 返金 🙂\n"


def test_the_text_as_sent_plain_or_json(api: RunningApi, tenant: Any, db_url: str) -> None:
    with client_for(api, tenant.api_key) as client:
        sent = client.post("/v1/documents", json={"documents": [
            {"external_id": "kb/refunds", "title": "Refunds", "text": TEXT}]})
        assert sent.status_code == 202
        drain(api.settings, db_url)
        plain = client.get("/v1/documents/kb/refunds/content")
        assert plain.status_code == 200, plain.text
        assert plain.headers["content-type"] == "text/plain; charset=utf-8"
        assert plain.content == TEXT.encode()
        as_json = client.get("/v1/documents/kb/refunds/content", headers={"Accept": "application/json"})
        assert as_json.headers["content-type"] == "application/json"
        body = as_json.json()
        assert body == {"document_id": body["document_id"], "external_id": "kb/refunds", "title": "Refunds",
                        "text": TEXT}
        assert client.get("/v1/documents/kb/refunds").json()["document_id"] == body["document_id"]
        # plain wins a tie and whatever is not weighed higher
        for accept in ("*/*", "text/*, application/json", "application/json;q=0.5, text/plain", "image/png"):
            assert client.get("/v1/documents/kb/refunds/content", headers={"Accept": accept}).headers[
                "content-type"].startswith("text/plain"), accept
        assert client.head("/v1/documents/kb/refunds/content").status_code == 200


def test_missing_or_another_companys_document_is_a_json_404(api: RunningApi, tenant: Any, other_tenant: Any,
                                                             conn: psycopg.Connection[Any]) -> None:
    seed(conn, other_tenant.company_id, ["theirs"])
    with client_for(api, tenant.api_key) as client:
        for path in ("/v1/documents/nothing/content", "/v1/documents/theirs/content"):
            assert "no document" in assert_error(client.get(path), 404, "not_found")["message"]
    with client_for(api, None) as client:
        assert_error(client.get("/v1/documents/theirs/content"), 401, "unauthorized")


def test_a_literal_content_suffix_names_the_text_an_encoded_one_an_external_id(
        api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    seed(conn, tenant.company_id, ["notes/content", "notes", "content"])
    with client_for(api, tenant.api_key) as client:
        assert client.get("/v1/documents/notes/content").text == "text of notes é"
        assert client.get("/v1/documents/notes%2Fcontent").json()["external_id"] == "notes/content"
        assert client.get("/v1/documents/notes%2Fcontent/content").text == "text of notes/content é"
        assert client.get("/v1/documents/content").json()["external_id"] == "content"
        assert client.get("/v1/documents/content/content").text == "text of content é"
        refused = client.delete("/v1/documents/notes/content")
        assert_error(refused, 405, "method_not_allowed")
        assert refused.headers["allow"] == "GET, HEAD"
        assert client.delete("/v1/documents/notes%2Fcontent").status_code == 202


@pytest.mark.parametrize("accept", ["text/plain", "application/json"])
def test_a_large_text_is_streamed_in_slices(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any],
                                            accept: str) -> None:
    big = ("ß€🙂\"\\\n" * (TEXT_SLICE // 3))[: TEXT_SLICE * 2 + 5]  # slice ends fall inside escapes and surrogates
    conn.execute("INSERT INTO documents (company_id, external_id, body, content_hash, created_at) "
                 "VALUES (%s, 'big', %s, '\\x00', now())", (tenant.company_id, big))
    with client_for(api, tenant.api_key) as client:
        client.headers.pop("accept-encoding")
        with client.stream("GET", "/v1/documents/big/content", headers={"Accept": accept}) as response:
            assert response.status_code == 200
            assert "content-length" not in response.headers, "streamed, not built whole"
            assert response.headers["transfer-encoding"] == "chunked"
            data = response.read()
    if accept == "text/plain":
        assert data == big.encode()
    else:
        assert json.loads(data)["text"] == big


def test_text_pieces_encode_slice_by_slice() -> None:
    assert list(text_pieces("abcdé", size=2)) == [b"ab", b"cd", "é".encode()]
    assert list(text_pieces("", size=2)) == []
    assert b"".join(text_pieces("🙂" * 5, size=3)) == ("🙂" * 5).encode()
