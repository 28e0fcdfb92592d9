"""Migrations: equal to the declared schema, idempotent, safe to run concurrently."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from core.db import declared_schema, ensure_partitions, migrate, migrations
from core.embedded import EmbeddedPostgres, pg_command, pg_url
from core.errors import ConfigError
from tests.conftest import make_settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def empty_db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    names = []

    def make(name: str) -> str:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return pg_url(pg_server.socket_dir, pg_server.port, name)

    yield make  # type: ignore[misc]
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def schema_dump(url: str) -> str:
    out = subprocess.run(pg_command("pg_dump", "--schema-only", "--no-owner", "--exclude-table=schema_migrations",
                                    "-d", url), capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("--")
             and not line.startswith("\\restrict") and not line.startswith("\\unrestrict")]
    return re.sub(r"\n+", "\n", "\n".join(lines))


def test_migrations_equal_declared_schema(empty_db: callable) -> None:  # type: ignore[valid-type]
    settings = make_settings()
    migrated = empty_db("schema_migrated")
    declared = empty_db("schema_declared")
    migrate(migrated, settings, now=NOW)
    with psycopg.connect(declared, autocommit=True) as conn:
        conn.execute(declared_schema(settings).encode())
        ensure_partitions(conn, NOW)
    assert schema_dump(migrated) == schema_dump(declared)


def test_migrate_twice_and_concurrently(empty_db: callable) -> None:  # type: ignore[valid-type]
    url = empty_db("schema_concurrent")
    settings = make_settings()
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(url, settings, now=NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations(settings))], \
        "exactly one starter applied the migrations"
    assert migrate(url, settings, now=NOW) == []
    with psycopg.connect(url) as conn:
        names = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'chunks_p%' AND relkind = 'r'").fetchall()}
    assert names == {"chunks_p2026_11", "chunks_p2026_12", "chunks_p2027_01", "chunks_p2027_02", "chunks_p2027_03"}


def test_a_start_with_another_dimension_follows_the_database_and_says_so(
        empty_db: callable, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[valid-type]
    from core.spaces.follow import follow_database

    url = empty_db("schema_dim")
    migrate(url, make_settings(embed_dim=384), now=NOW)
    with caplog.at_level("WARNING"):
        migrate(url, make_settings(embed_dim=768), now=NOW)
    assert "writes hash-v1 (768-d) but the database's active vector space is hash-v1 (384-d)" in caplog.text
    with psycopg.connect(url) as conn:
        assert follow_database(make_settings(embed_dim=768), conn).dim == 384


def test_a_column_of_another_dimension_than_the_active_space_is_a_clear_error(
        empty_db: callable) -> None:  # type: ignore[valid-type]
    url = empty_db("schema_dim_broken")
    migrate(url, make_settings(embed_dim=384), now=NOW)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE vector_spaces SET dim = 768")
    with pytest.raises(ConfigError, match="stores 384-dimensional embeddings but its active vector space"):
        migrate(url, make_settings(embed_dim=384), now=NOW)


def test_every_btree_index_leads_with_company_id(pg_server: EmbeddedPostgres, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, t.relname, a.attname, am.amname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_am am ON am.oid = c.relam
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
            WHERE t.relname IN ('documents', 'chunks', 'api_keys', 'mail_threads', 'mail_ids', 'mail_messages')
            """
        ).fetchall()
    by_first = {(r[0], r[2], r[3]) for r in rows}
    for name, first, method in by_first:
        if method == "btree" and name not in ("api_keys_pkey", "api_keys_key_hash_idx"):
            assert first == "company_id", name
    assert ("chunks_embedding_hnsw_idx", "embedding", "hnsw") in by_first
    assert ("chunks_tsv_idx", "tsv", "gin") in by_first
    assert {"mail_ids_pkey", "mail_ids_thread_idx", "mail_messages_pkey", "mail_messages_thread_idx",
            "mail_threads_pkey", "mail_threads_merged_idx", "mail_threads_subject_idx"} <= {r[0] for r in rows}
