"""Vector index maintenance: pure decisions by tables; status, tune and maintain on real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from core.config import Settings
from core.db import make_pool
from opsctl.policy import PolicyError, validate_data
from opsctl.vindex.decide import (
    IndexStats,
    TunePoint,
    choose_ef_search,
    ef_candidates,
    needs_reindex,
    recall_at_k,
)
from opsctl.vindex.jobs import job_index_maintenance
from opsctl.vindex.pg import set_database_ef_search
from opsctl.vindex.policy import VectorIndexPolicy
from opsctl.vindex.service import maintain, tune
from tests.conftest import project_root


def pol(**kw: Any) -> VectorIndexPolicy:
    return VectorIndexPolicy.model_validate(kw)


def stats(live: int = 10_000, dead: int = 0, index_bytes: int = 100, table_bytes: int = 100,
          recall: float | None = 0.99, valid: bool = True) -> IndexStats:
    return IndexStats("chunks_p2026_11_embedding_idx", "chunks_p2026_11", index_bytes, table_bytes, live, dead,
                      recall, None, valid)


@pytest.mark.parametrize(("st", "policy", "reindex", "reason"), [
    (stats(), pol(), False, ""),
    (stats(recall=0.90), pol(), True, "recall@10 0.900 < target 0.950"),
    (stats(recall=0.90), pol(reindex={"recall_below_target": False}), False, ""),
    (stats(recall=None), pol(), False, ""),
    (stats(dead=3000), pol(), True, "dead tuples 23% > 20%"),
    (stats(dead=2000), pol(), False, ""),
    (stats(dead=2000), pol(reindex={"dead_tuple_fraction": None}), False, ""),
    (stats(index_bytes=500), pol(), True, "index 5.0x the table's size > 4x"),
    (stats(index_bytes=400), pol(), False, ""),
    (stats(live=10, dead=1000, recall=0.1), pol(), False, "10 live rows < min_rows 1000"),
    (stats(valid=False, live=10), pol(), True, "the index is invalid (an interrupted build)"),
])
def test_needs_reindex(st: IndexStats, policy: VectorIndexPolicy, reindex: bool, reason: str) -> None:
    decision = needs_reindex(st, policy)
    assert decision.reindex is reindex
    assert (decision.reasons[0] if decision.reasons else "") == reason


@pytest.mark.parametrize(("points", "chosen"), [
    ([(10, 0.80, 1), (20, 0.94, 1), (40, 0.95, 2), (80, 0.99, 3)], 40),
    ([(80, 0.99, 3), (10, 0.96, 1)], 10),
    ([(10, 0.5, 1), (400, 0.9, 5)], None),
])
def test_choose_ef_search(points: list[tuple[int, float, float]], chosen: int | None) -> None:
    got = choose_ef_search([TunePoint(*p) for p in points], pol())
    assert (got.ef_search if got else None) == chosen


@pytest.mark.parametrize(("bounds", "expected"), [
    ((10, 40), [10, 16, 20, 24, 32, 40]),
    ((15, 33), [15, 16, 20, 24, 32, 33]),
    ((100, 100), [100]),
])
def test_ef_candidates(bounds: tuple[int, int], expected: list[int]) -> None:
    assert ef_candidates(pol(ef_search_min=bounds[0], ef_search_max=bounds[1])) == expected


@pytest.mark.parametrize(("approx", "exact", "k", "recall"), [
    ([1, 2, 3], [3, 2, 1], 3, 1.0), ([1, 2, 4], [1, 2, 3], 3, 2 / 3), ([], [1], 1, 0.0), ([1], [], 10, 1.0),
])
def test_recall_at_k(approx: list[int], exact: list[int], k: int, recall: float) -> None:
    assert recall_at_k(approx, exact, k) == pytest.approx(recall)


@pytest.mark.parametrize(("data", "reason"), [
    ({"ef_search_min": 200, "ef_search_max": 100}, "must not exceed"),
    ({"k": 50, "ef_search_max": 40}, "at least k"),
    ({"target_recall": 1.5}, "less than or equal"),
    ({"reindex": {"dead_tuple_fraction": 2}}, "less than or equal"),
])
def test_policy_validation(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        validate_data(data, VectorIndexPolicy, "vector-index.yaml")


# --- real PostgreSQL -------------------------------------------------------------------------------


def corpus(conn: psycopg.Connection[Any], companies: list[int], n: int, seed: int = 7) -> None:
    """``n`` chunks per company of clustered random 384-d vectors, in the current month."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, 384))
    for company in companies:
        vecs = centers[rng.integers(0, 20, n)] + rng.normal(scale=0.6, size=(n, 384))
        with conn.cursor().copy("COPY chunks (company_id, document_id, external_id, ord, body, embedding, "
                                "created_at) FROM STDIN") as copy:
            for i, v in enumerate(vecs):
                copy.write_row((company, i, f"e{i}", 0, "x", "[" + ",".join(f"{x:.4f}" for x in v) + "]", "now"))


def companies(conn: psycopg.Connection[Any], n: int) -> list[int]:
    from core.tenants import create_company

    return [create_company(conn, f"co{i}").company_id for i in range(n)]


def current_partition(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT tableoid::regclass::text FROM chunks LIMIT 1").fetchone()
    assert row is not None
    return str(row[0])


def test_tune_reaches_the_target_and_the_service_uses_it(settings: Settings, conn: psycopg.Connection[Any],
                                                         db_url: str) -> None:
    corpus(conn, companies(conn, 2), 1500)
    policy = pol(target_recall=0.95, ef_search_min=10, ef_search_max=400, sample_queries=40)
    result = tune(settings, policy, apply=True)
    assert result.chosen is not None and result.chosen.recall >= 0.95
    assert all(p.recall < 0.95 for p in result.points[:-1]) and result.points[-1] == result.chosen
    # the database default changed, and the core's pool (ef_search not configured) uses it
    pool = make_pool(db_url, settings, min_size=1, max_size=1)
    try:
        with pool.connection() as c:
            assert c.execute("SHOW hnsw.ef_search").fetchone() == (str(result.chosen.ef_search),)
    finally:
        pool.close()
    configured = Settings(**{**settings.model_dump(exclude_unset=True), "hnsw_ef_search": 77})
    explicit = make_pool(db_url, configured, min_size=1, max_size=1)
    try:
        with explicit.connection() as c:
            assert c.execute("SHOW hnsw.ef_search").fetchone() == ("77",)
    finally:
        explicit.close()
    event = conn.execute("SELECT from_state, to_state, details FROM ops_events WHERE action = 'index.tune'").fetchone()
    assert event is not None and event[1] == str(result.chosen.ef_search)
    assert [p["ef_search"] for p in event[2]["points"]] == [p.ef_search for p in result.points]
    # a dry run measures but does not change the default
    again = tune(settings, pol(ef_search_min=200, ef_search_max=400, sample_queries=10), apply=False)
    assert again.previous == result.chosen.ef_search
    with psycopg.connect(db_url) as fresh:
        assert fresh.execute("SHOW hnsw.ef_search").fetchone() == (str(result.chosen.ef_search),)


def test_maintain_rebuilds_concurrently_then_vacuums(settings: Settings, conn: psycopg.Connection[Any],
                                                     tmp_path: Path) -> None:
    corpus(conn, companies(conn, 1), 1500)
    part = current_partition(conn)
    conn.execute(f"DELETE FROM {part} WHERE id % 3 = 0")
    conn.execute("SELECT pg_stat_force_next_flush()")
    policy = pol(sample_queries=10, reindex={"dead_tuple_fraction": 0.2, "min_rows": 100})
    dry = maintain(settings, policy, apply=False)
    fired = [(st, d) for st, d in dry.decisions if d.reindex]
    assert [st.table for st, _ in fired] == [part]
    assert "dead tuples 33% > 20%" in fired[0][1].reasons
    seen: list[str] = []
    oid_before = conn.execute("SELECT %s::regclass::oid", (fired[0][0].index,)).fetchone()
    # a writer holds the partition: the rebuild waits for it in a phase of pg_stat_progress_create_index,
    # so the progress poll sees the view however fast the build itself is; the first sample releases it
    blocker = psycopg.connect(settings.database_url or "")
    blocker.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(part)))

    def progress(i: int, phase: str, done: int, total: int) -> None:
        seen.append(phase)
        if phase != "vacuum" and blocker.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            blocker.rollback()

    try:
        done = maintain(settings, policy, apply=True, progress=progress)
    finally:
        blocker.close()
    assert done.done and done.sentence().startswith("rebuilt 1 of")
    assert "vacuum" in seen and any(ph != "vacuum" for ph in seen), seen
    oid_after = conn.execute("SELECT %s::regclass::oid", (fired[0][0].index,)).fetchone()
    assert oid_before != oid_after  # a new index took the old one's name
    valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                         (fired[0][0].index,)).fetchone()
    assert valid == (True,)
    acts = [r[0] for r in conn.execute("SELECT action FROM ops_log ORDER BY id").fetchall()]  # changes + decisions
    assert acts.count("index.reindex") == 1 and acts.count("index.vacuum") == 1 and "index.recall" in acts
    (was,) = conn.execute("SELECT from_state FROM ops_events WHERE action = 'index.reindex'").fetchone()
    assert re.fullmatch(r"\d+(\.\d)? (KiB|MiB)", was), was  # the event reads as a size
    conn.execute("SELECT pg_stat_force_next_flush()")
    # the daemon job: after the vacuum nothing fires any more
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "vector-index.yaml").write_text(
        (project_root() / "policies" / "vector-index.yaml").read_text().replace("min_rows: 1000", "min_rows: 100"))
    set_database_ef_search(conn, 400)  # recall near 1 on this small partition: only a real trigger may fire
    sentence = job_index_maintenance(settings, policies)
    assert sentence.endswith("healthy: nothing to rebuild"), sentence


def test_status_cli(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    corpus(conn, companies(conn, 1), 300)
    conn.execute("SELECT pg_stat_force_next_flush()")
    env = {**os.environ, "OPSCTL_DATABASE_URL": settings.database_url or "",
           "OPSCTL_POLICY_DIR": str(project_root() / "policies")}
    out = subprocess.run([sys.executable, "-m", "opsctl.cli", "index", "status", "-o", "json"], env=env,
                         capture_output=True, text=True, cwd=project_root())
    assert out.returncode == 0, out.stderr
    rows = {r["table"]: r for r in json.loads(out.stdout)}
    row = rows[current_partition(conn)]
    assert row["queries"] == 50 and 0.5 <= row["recall@10"] <= 1.0 and row["p50_ms"] > 0
    assert row["live_tuples"] == 300 and row["valid"] is True
    empty = [r for t, r in rows.items() if t != current_partition(conn)]
    assert empty and all(r["recall@10"] is None for r in empty)
