"""The capacity planner, by tables: a demand and a calibration in, replicas, connections, memory and
sizes out, with what breaks first."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from opsctl.capacity.calibration import (
    ApiCapacity,
    ApiRun,
    CacheSizes,
    Calibration,
    ChunkBytes,
    DocumentBytes,
    Machine,
    Storage,
    WorkerCapacity,
)
from opsctl.capacity.plan import GIB, TIB, Demand, Deployment, Sourced, plan

CAL = Calibration(
    measured_at=datetime(2026, 11, 27, tzinfo=UTC), command="test",
    machine=Machine(cpus=2, cpu_model="x", ram_gib=8, load_before=(1, 1, 1), load_after=(1, 1, 1), other_cpu_cores=0),
    worker=WorkerCapacity(documents_per_second=5, chunks_per_second=10, documents=100, chunks=200, seconds=20,
                          embedder="onnx", batch_size=32, cpu_seconds_per_chunk=0.05),
    api=ApiCapacity(requests_per_second=100, mix="search", runs=[
        ApiRun(users=8, requests_per_second=80, p50_ms=20, p95_ms=50, failures=0, cpu_seconds_per_request=0.005),
        ApiRun(users=16, requests_per_second=100, p50_ms=40, p95_ms=90, failures=0, cpu_seconds_per_request=0.005)]),
    storage=Storage(chunks_per_document=2, chunk=ChunkBytes(table=4000, hnsw=2000, gin=1500, btree=500),
                    document=DocumentBytes(table=2000, indexes=500, jobs=500), documents=100),
    cache=CacheSizes(search_entry_bytes=8000, document_entry_bytes=400, search_hit_ratio=0.6),
)


def deployment(**changes: float | None) -> Deployment:
    values: dict[str, float | None] = dict(
        api_utilization=0.5, worker_utilization=0.5, api_min_replicas=2, api_max_replicas=20,
        worker_min_replicas=1, worker_max_replicas=10, db_pool_max=10, max_connections=100,
        search_ttl_seconds=300, document_ttl_seconds=300, redis_maxmemory=256 * 1024**2,
        search_share=0.5, read_share=0.25, db_cores=16, db_memory=64 * GIB, db_disk=4 * TIB, redis_node_memory=32 * GIB)
    values.update(changes)
    return Deployment(**{k: None if v is None else Sourced(v, "test") for k, v in values.items()})  # type: ignore[arg-type]


# demand, deployment changes, expected {item: value}
CASES: list[tuple[str, Demand, dict[str, Any], dict[str, float]]] = [
    ("the seeds' low end: 50 users at 5 s think time", Demand(users=50), {},
     {"requests/s": 10, "API replicas": 2}),  # ceil(10 / 50) = 1, the policy's minimum 2
    ("the seeds' high end: 100 users", Demand(users=100, think_seconds=5), {},
     {"requests/s": 20, "API replicas": 2}),
    ("--rps wins over --users", Demand(rps=120, users=100), {},
     {"requests/s": 120, "API replicas": 3}),  # ceil(120 / (100 * 0.5))
    ("the policy's utilisation is the headroom", Demand(rps=120), {"api_utilization": 0.8},
     {"API replicas": 2}),  # ceil(120 / 80)
    ("workers from the peak ingest rate", Demand(growth_per_day=86_400, ingest_peak_factor=3), {},
     {"ingest at peak": 6, "worker replicas": 2}),  # 1 doc/s * 3 * 2 chunks = 6 chunks/s over 10 * 0.5
    ("no ingest: the policy's minimum of workers", Demand(rps=1), {"worker_min_replicas": 3},
     {"worker replicas": 3}),
    ("connections: pools, workers, daemon, reserved", Demand(rps=120, growth_per_day=86_400), {},
     {"connections without a pooler": 3 * 10 + 2 * 2 + 2 + 3,
      # in flight: 120 req/s * 20 ms (the least-loaded run's p50) = 2.4; * 2 = 4.8 → 5, + 2 worker batches
      "PgBouncer default_pool_size": 5 + 2, "PgBouncer max_client_conn": 3 * 10 + 2,
      "connections behind a pooler": 7 + 2 + 2 + 3,
      "pool per API process (db_pool_max)": 2}),  # 2.4 / 3 replicas * 2 = 1.6 → the floor of 2
    ("Redis: new keys * TTL * entry size", Demand(rps=100, documents=10), {},
     # 100 * 0.5 searches * 0.4 misses * 300 s * 8000 B + min(10 documents, 25 reads/s * 300 s) * 400 B
     {"Redis memory": 20 * 300 * 8000 + 10 * 400}),
    ("database: documents, chunks, bytes", Demand(documents=1000, growth_per_day=10, horizon_days=100), {},
     {"documents at horizon": 2000, "chunks at horizon": 4000, "database size": 4000 * 8000 + 2000 * 3000,
      "HNSW index": 4000 * 2000}),
    ("--chunks: documents from the measured chunks per document", Demand(chunks=1_000_000), {},
     {"documents at horizon": 500_000, "chunks at horizon": 1_000_000}),
]


@pytest.mark.parametrize(("name", "demand", "changes", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan(name: str, demand: Demand, changes: dict[str, Any], expected: dict[str, float]) -> None:
    result = plan(demand, deployment(**changes), CAL, "capacity.json")
    for item, value in expected.items():
        assert result.value(item) == pytest.approx(value), item


def test_every_line_says_how_it_was_computed_and_every_input_its_source() -> None:
    result = plan(Demand(rps=20, documents=100), deployment(), CAL, "policies/capacity.json")
    assert result.lines and all(line.how for line in result.lines)
    assert "ceil(20 / (100 * 0.5)), at least 2" in next(x.how for x in result.lines if x.item == "API replicas")
    names = {name for name, _ in result.assumptions}
    assert {"API requests/s per process (search mix)", "bytes per chunk (table + HNSW + GIN + btree)",
            "api utilization", "db pool max", "search ttl seconds"} <= names
    assert all(s.source for _, s in result.assumptions)
    assert "policies/capacity.json, measured 2026-11-27 on 2 CPUs" in dict(result.assumptions)[
        "API requests/s per process (search mix)"].source


# demand → the limit that breaks first (a node's), and settings exceeded
LIMITS: list[tuple[str, Demand, str | None, set[str]]] = [
    ("the seeds fit one small system", Demand(users=100, documents=100_000, growth_per_day=1000), None, set()),
    ("10,000 req/s and a billion chunks: the HNSW index outgrows the host's memory first",
     Demand(rps=10_000, chunks=1_000_000_000), "HNSW index against the database host's memory",
     {"API replicas against the policy's maxReplicas", "connections without a pooler against max_connections",
      "Redis memory against the cache policy's maxmemory"}),
    ("10,000 req/s alone: the primary's connections", Demand(rps=10_000, documents=1000),
     "connections behind a pooler against max_connections",
     {"API replicas against the policy's maxReplicas", "connections without a pooler against max_connections",
      "Redis memory against the cache policy's maxmemory"}),
]


@pytest.mark.parametrize(("name", "demand", "first", "settings"), LIMITS, ids=[c[0] for c in LIMITS])
def test_what_breaks_first(name: str, demand: Demand, first: str | None, settings: set[str]) -> None:
    result = plan(demand, deployment(), CAL, "capacity.json")
    assert (result.breaks_first.what if result.breaks_first else None) == first
    assert {lim.what for lim in result.limits if lim.breaks and lim.kind == "setting"} == settings
    ratios = [lim.ratio for lim in result.limits]
    assert ratios == sorted(ratios, reverse=True)


def test_a_policy_without_a_maximum_sets_no_replica_limit() -> None:
    result = plan(Demand(rps=10_000), deployment(api_max_replicas=None), CAL, "capacity.json")
    assert not any("API replicas" in lim.what for lim in result.limits)
    assert result.value("API replicas") == math.ceil(10_000 / 50)


def test_the_cpu_basis_plans_with_a_core_of_its_own_per_replica() -> None:
    # the best run's 0.005 CPU s per request: 200 requests/s; 0.05 CPU s per chunk: 20 chunks/s
    demand = Demand(rps=120, growth_per_day=86_400 * 10)  # 60 chunks/s at the peak
    measured = plan(demand, deployment(), CAL, "capacity.json")
    cpu = plan(demand, deployment(), CAL, "capacity.json", basis="cpu")
    assert (measured.value("API replicas"), measured.value("worker replicas")) == (3, 12)
    assert (cpu.value("API replicas"), cpu.value("worker replicas")) == (2, 6)
    assert "1 / 0.005 CPU s per request" in dict(cpu.assumptions)["API requests/s per process (search mix)"].source


def test_the_cpu_basis_needs_the_cpu_figures() -> None:
    without = CAL.model_copy(update={"worker": CAL.worker.model_copy(update={"cpu_seconds_per_chunk": None})})
    with pytest.raises(ValueError, match="no CPU seconds"):
        plan(Demand(rps=1), deployment(), without, "capacity.json", basis="cpu")


WITH_DB_CPU = CAL.model_copy(update={"api": CAL.api.model_copy(update={"runs": [
    CAL.api.runs[0], CAL.api.runs[1].model_copy(update={"db_cpu_seconds_per_request": 0.002})]})})


def test_with_the_database_cpu_per_request_connections_follow_the_database_time() -> None:
    result = plan(Demand(rps=1000), deployment(), WITH_DB_CPU, "capacity.json")
    assert result.value("database CPU for searches") == 2  # 1,000 req/s * 2 ms of backend CPU
    assert result.value("PgBouncer default_pool_size") == 4 + 1  # 2 in flight * 2, + 1 worker
    assert dict(result.assumptions)["database CPU per request"].value == 0.002
    big = plan(Demand(rps=10_000), deployment(), WITH_DB_CPU, "capacity.json")
    cpu = next(lim for lim in big.limits if lim.what == "database CPU against the database host's cores")
    assert (cpu.need, cpu.limit, cpu.breaks, cpu.kind) == (20, 16, True, "node")


def test_a_calibration_from_a_loaded_machine_says_so_unless_planned_on_cpu() -> None:
    loaded = CAL.model_copy(update={"machine": CAL.machine.model_copy(update={"other_cpu_cores": 1.5})})
    assert plan(Demand(rps=1), deployment(), CAL, "c.json").notes == []
    assert "other processes took 1.5 of 2 CPUs" in plan(Demand(rps=1), deployment(), loaded, "c.json").notes[0]
    assert plan(Demand(rps=1), deployment(), loaded, "c.json", basis="cpu").notes == []


def test_bytes_in_a_formula_read_as_the_tables_show_them() -> None:
    from core.humanize import format_bytes

    result = plan(Demand(documents=100), deployment(), CAL, "capacity.json")
    hnsw = next(x.how for x in result.lines if x.item == "HNSW index")
    assert hnsw.endswith(f"chunks * {format_bytes(CAL.storage.chunk.hnsw)}") and hnsw.endswith("* 2 KiB")
