"""Compressed answers: the negotiation as tables, then gzip and zstd decoded off a real server."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import psycopg
import pytest
import zstandard

from core.documents import TEXT_SLICE
from core.negotiate import choose_encoding, prefers
from tests.conftest import RunningApi, client_for
from tests.test_documents_list import seed

BOTH = ("zstd", "gzip")


@pytest.mark.parametrize(("header", "offered", "chosen"), [
    (None, BOTH, None),                                  # not asked: not compressed
    ("", BOTH, None),
    ("identity", BOTH, None),
    ("gzip", BOTH, "gzip"),
    ("zstd", BOTH, "zstd"),
    ("gzip, deflate, br, zstd", BOTH, "zstd"),           # equal weights: the server's preference
    ("gzip, zstd", ("gzip", "zstd"), "gzip"),
    ("GZIP", BOTH, "gzip"),                              # case-insensitive
    ("x-gzip", BOTH, "gzip"),                            # the old alias
    ("zstd;q=0, gzip", BOTH, "gzip"),                    # q=0 refuses
    ("zstd;q=0", BOTH, None),
    ("zstd;q=0.5, gzip;q=0.8", BOTH, "gzip"),            # the heavier wins
    ("zstd;q=0.8, gzip;q=0.5", BOTH, "zstd"),
    ("*", BOTH, "zstd"),
    ("*;q=0.3, gzip;q=0.2", BOTH, "zstd"),               # the more specific entry sets gzip's weight
    ("*;q=0", BOTH, None),
    ("*;q=0, gzip", BOTH, "gzip"),
    ("br, deflate", BOTH, None),                         # nothing offered is accepted
    ("gzip;q=0.5, identity", BOTH, None),                # identity listed heavier
    ("gzip;q=0.5", BOTH, "gzip"),                        # identity unlisted: acceptable, the last choice
    ("gzip, identity;q=0.5", BOTH, "gzip"),
    ("gzip;q=1.5, zstd;q=abc", BOTH, None),              # malformed weights: those elements ignored
    ("gzip;q=0.001", BOTH, "gzip"),
    (" zstd ; q=0.9 ,gzip;Q=1", BOTH, "gzip"),           # spaces, a capital Q
    ("zstd, gzip", ("gzip",), "gzip"),                   # offered: the setting compress_encodings
    ("zstd, gzip", (), None),
    (",,, ;q=1", BOTH, None),
])
def test_choose_encoding(header: str | None, offered: tuple[str, ...], chosen: str | None) -> None:
    assert choose_encoding(header, offered) == chosen


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, "text/plain"),
    ("application/json", "application/json"),
    ("text/plain", "text/plain"),
    ("*/*", "text/plain"),
    ("application/*", "application/json"),
    ("text/*;q=0.5, application/json", "application/json"),
    ("application/json;q=0.5, text/plain", "text/plain"),
    ("application/json, text/plain", "text/plain"),          # a tie: the first offer
    ("*/*;q=0.1, application/json", "application/json"),
    ("application/json;q=0, */*", "text/plain"),
    ("text/plain;q=0, */*", "application/json"),             # the more specific range sets the weight
    ("image/png", "text/plain"),                             # nothing acceptable: the default anyway
    ("Application/JSON", "application/json"),
])
def test_prefers(accept: str | None, chosen: str) -> None:
    assert prefers(accept, ("text/plain", "application/json")) == chosen


def raw_get(client: httpx.Client, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    """The answer and its body as it came over the wire (not decoded by httpx)."""
    with client.stream("GET", path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


@pytest.fixture
def listed(api: RunningApi, tenant: Any, conn: psycopg.Connection[Any]) -> httpx.Client:
    seed(conn, tenant.company_id, [f"document-{n:03d}" for n in range(60)])
    return client_for(api, tenant.api_key)


def test_gzip_and_zstd_over_http(listed: httpx.Client) -> None:
    with listed as client:
        client.headers.pop("accept-encoding")
        plain, body = raw_get(client, "/v1/documents")
        assert "content-encoding" not in plain.headers, "not asked: not compressed"
        assert plain.headers["vary"] == "Accept-Encoding"
        expected = json.loads(body)
        assert len(body) > 1024 and len(expected["documents"]) == 60

        zstd, packed = raw_get(client, "/v1/documents", **{"Accept-Encoding": "gzip, zstd"})
        assert zstd.headers["content-encoding"] == "zstd"
        assert zstd.headers["vary"] == "Accept-Encoding"
        assert int(zstd.headers["content-length"]) == len(packed) < len(body) / 3
        assert json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(packed)) == expected

        gz, packed = raw_get(client, "/v1/documents", **{"Accept-Encoding": "zstd;q=0, gzip"})
        assert gz.headers["content-encoding"] == "gzip"
        assert json.loads(gzip.decompress(packed)) == expected
        assert client.get("/v1/documents", headers={"Accept-Encoding": "gzip"}).json() == expected  # httpx decodes

        refused, same = raw_get(client, "/v1/documents", **{"Accept-Encoding": "zstd;q=0, br"})
        assert "content-encoding" not in refused.headers and json.loads(same) == expected


def test_small_answers_and_errors_below_the_threshold_go_as_they_are(listed: httpx.Client) -> None:
    with listed as client:
        small, body = raw_get(client, "/v1/documents?limit=1", **{"Accept-Encoding": "zstd, gzip"})
        assert len(body) < 1024 and "content-encoding" not in small.headers
        assert small.headers["vary"] == "Accept-Encoding"
        assert json.loads(body)["documents"][0]["external_id"] == "document-000"
        missing, body = raw_get(client, "/v1/documents/none", **{"Accept-Encoding": "gzip"})
        assert missing.status_code == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_metrics_are_compressed_only_when_asked(api: RunningApi) -> None:
    with client_for(api, None) as client:
        client.headers.pop("accept-encoding")
        plain, body = raw_get(client, "/metrics")
        assert "content-encoding" not in plain.headers and b"core_http_request_duration_seconds" in body
        asked, packed = raw_get(client, "/metrics", **{"Accept-Encoding": "gzip"})  # what Prometheus sends
        assert asked.headers["content-encoding"] == "gzip"
        assert b"core_http_request_duration_seconds" in gzip.decompress(packed)


def test_a_streamed_text_is_compressed_as_it_streams(api: RunningApi, tenant: Any,
                                                     conn: psycopg.Connection[Any]) -> None:
    big = "line of text with some words, again and again\n" * (TEXT_SLICE // 10)
    conn.execute("INSERT INTO documents (company_id, external_id, body, content_hash, created_at) "
                 "VALUES (%s, 'big', %s, '\\x00', now())", (tenant.company_id, big))
    with client_for(api, tenant.api_key) as client:
        for coding, unpack in [("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
                               ("gzip", gzip.decompress)]:
            response, packed = raw_get(client, "/v1/documents/big/content", **{"Accept-Encoding": coding})
            assert response.headers["content-encoding"] == coding
            assert "content-length" not in response.headers
            assert len(packed) < len(big) / 10
            assert unpack(packed) == big.encode()


def test_compression_off_when_no_encoding_is_offered(settings: Any, tenant: Any, conn: psycopg.Connection[Any]) -> None:
    seed(conn, tenant.company_id, [f"document-{n:03d}" for n in range(60)])
    api = RunningApi(settings.model_copy(update={"compress_encodings": []}))
    try:
        with client_for(api, tenant.api_key) as client:
            response, _ = raw_get(client, "/v1/documents", **{"Accept-Encoding": "zstd, gzip"})
            assert "content-encoding" not in response.headers and "vary" not in response.headers
    finally:
        api.close()
