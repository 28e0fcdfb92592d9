"""The fair claim (issue 15 §1): one table of claim orders, checked against the pure decision
(``core.ingest.fair.claim_order``) and against the claim statement on real PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from core.ingest.claim import claim_jobs
from core.ingest.fair import (
    Backlog,
    ClaimWeights,
    Lane,
    Waiting,
    claim_order,
    claim_weights,
    intake_lane,
    parse_priority,
    shares,
    top_backlogs,
)
from core.tenants import create_company
from core.tiers import parse_policy
from core.usage.tally import OTHER

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WEIGHTS = {"free": 1, "standard": 4, "premium": 16}
CLAIM_WEIGHTS = ClaimWeights(("free", "premium", "standard"), (1, 16, 4), 4)  # the default tier: standard


@dataclass(frozen=True)
class Queued:
    company: str
    label: str
    due: float  # seconds after T0


def backlog(company: str, count: int, first_due: float = 0.0, prefix: str | None = None) -> list[Queued]:
    return [Queued(company, f"{prefix or company}{i}", first_due + i) for i in range(1, count + 1)]


# (case, tier per company (None: the default tier), jobs in the order they were queued, n, the claim)
CASES: list[tuple[str, dict[str, str | None], list[Queued], int, list[str]]] = [
    ("a backlog and one document: the document is in the first batch",
     {"a": "standard", "b": "standard"}, [*backlog("a", 40), Queued("b", "b1", 100)], 8,
     ["a1", "b1", "a2", "a3", "a4"]),
    ("the default tier's weight for a company without one",
     {"a": None, "b": "standard"}, [*backlog("a", 40), Queued("b", "b1", 100)], 8,
     ["a1", "b1", "a2", "a3", "a4"]),
    ("weights 16 and 1 share a batch of 17 by 16 to 1",
     {"f": "free", "p": "premium"}, [*backlog("f", 10), *backlog("p", 40, first_due=10)], 17,
     [f"p{i}" for i in range(1, 16)] + ["f1", "p16"]),
    ("equal tags: the job due first",
     {"a": "standard", "f": "free"}, [*backlog("f", 3), *backlog("a", 10, first_due=10)], 5,
     ["a1", "a2", "a3", "f1", "a4"]),
    ("more companies than the batch: those due first",
     {"x": "standard", "y": "standard", "z": "standard"},
     [Queued("x", "x1", 5), Queued("y", "y1", 3), Queued("z", "z1", 4)], 2, ["y1", "z1"]),
    ("within a company by due time: interactive before earlier bulk, not before bulk already due",
     {"c": "standard"},
     [*(Queued("c", f"bulk{i}", 30 + i) for i in range(1, 6)), Queued("c", "now1", 10), Queued("c", "now2", 40)], 5,
     ["now1", "bulk1", "bulk2", "bulk3", "bulk4"]),
    ("one company alone takes the whole batch",
     {"a": "free"}, backlog("a", 10), 4, ["a1", "a2", "a3", "a4"]),
    ("an unknown tier has the default tier's weight",
     {"a": "gold", "f": "free"}, [*backlog("f", 10), *backlog("a", 10, first_due=20)], 5,
     ["a1", "a2", "a3", "f1", "a4"]),
]


def waiting_of(tiers: dict[str, str | None], jobs: list[Queued], ids: dict[str, int],
               companies: dict[str, int]) -> list[Waiting]:
    out = []
    for name, tier in tiers.items():
        weight = WEIGHTS.get(tier or "standard", 4)
        out.append(Waiting(companies[name], weight,
                           tuple((T0 + timedelta(seconds=j.due), ids[j.label]) for j in jobs if j.company == name)))
    return out


@pytest.mark.parametrize(("tiers", "jobs", "n", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_claim_order_table(tiers: dict[str, str | None], jobs: list[Queued], n: int, expected: list[str]) -> None:
    ids = {j.label: i for i, j in enumerate(jobs, start=1)}
    companies = {name: i for i, name in enumerate(tiers, start=1)}
    labels = {v: k for k, v in ids.items()}
    order = claim_order(waiting_of(tiers, jobs, ids, companies), n)
    assert [labels[i] for i in order] == expected


def insert_jobs(conn: psycopg.Connection[Any], tiers: dict[str, str | None], jobs: list[Queued],
                status: str = "queued") -> tuple[dict[str, int], dict[str, int]]:
    companies = {}
    for name, tier in tiers.items():
        companies[name] = create_company(conn, f"fair-{name}").company_id
        conn.execute("UPDATE companies SET tier = %s WHERE id = %s", (tier, companies[name]))
    ids = {}
    for job in jobs:
        row = conn.execute(
            "INSERT INTO ingest_jobs (company_id, external_id, op, payload, due_at, status)"
            " VALUES (%s, %s, 'upsert', '{}', %s, %s) RETURNING id",
            (companies[job.company], job.label, T0 + timedelta(seconds=job.due), status)).fetchone()
        assert row is not None
        ids[job.label] = row[0]
    return ids, companies


@pytest.mark.parametrize(("tiers", "jobs", "n", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_claim_statement_claims_what_the_decision_says(
        conn: psycopg.Connection[Any], tiers: dict[str, str | None], jobs: list[Queued], n: int,
        expected: list[str]) -> None:
    ids, companies = insert_jobs(conn, tiers, jobs)
    labels = {v: k for k, v in ids.items()}
    with conn.transaction():
        rows = claim_jobs(conn, "fair", CLAIM_WEIGHTS, n)
    claimed = [labels[r[0]] for r in rows]
    assert claimed == expected
    assert [r[0] for r in rows] == claim_order(waiting_of(tiers, jobs, ids, companies), n)


def test_the_fifo_claim_takes_the_oldest_jobs_whatever_their_company(conn: psycopg.Connection[Any]) -> None:
    ids, _ = insert_jobs(conn, {"a": "standard", "b": "standard"}, [*backlog("a", 40), Queued("b", "b1", 100)])
    labels = {v: k for k, v in ids.items()}
    with conn.transaction():
        rows = claim_jobs(conn, "fifo", CLAIM_WEIGHTS, 8)
    assert [labels[r[0]] for r in rows] == [f"a{i}" for i in range(1, 9)]


def test_jobs_done_or_waiting_for_a_retry_are_not_claimed(conn: psycopg.Connection[Any]) -> None:
    ids, companies = insert_jobs(conn, {"a": "standard", "b": "free"}, backlog("a", 3))
    insert_jobs_of(conn, companies["a"], ["done1", "done2"], "done")
    retry = insert_jobs_of(conn, companies["b"], ["later"], "failed")
    conn.execute("UPDATE ingest_jobs SET run_after = now() + interval '1 hour' WHERE id = %s", (retry[0],))
    with conn.transaction():
        rows = claim_jobs(conn, "fair", CLAIM_WEIGHTS, 10)
    assert sorted(r[0] for r in rows) == sorted(ids.values())


def insert_jobs_of(conn: psycopg.Connection[Any], company_id: int, labels: list[str], status: str) -> list[int]:
    return [conn.execute("INSERT INTO ingest_jobs (company_id, external_id, op, status) VALUES (%s, %s, 'upsert', %s)"
                         " RETURNING id", (company_id, label, status)).fetchone()[0]  # type: ignore[index]
            for label in labels]


def test_concurrent_claims_skip_each_others_jobs_and_still_fill_their_batch(
        conn: psycopg.Connection[Any], db_url: str) -> None:
    ids, _ = insert_jobs(conn, {"a": "standard"}, backlog("a", 20))
    labels = {v: k for k, v in ids.items()}
    with psycopg.connect(db_url) as other, conn.transaction(), other.transaction():
        first = [labels[r[0]] for r in claim_jobs(conn, "fair", CLAIM_WEIGHTS, 4)]
        second = [labels[r[0]] for r in claim_jobs(other, "fair", CLAIM_WEIGHTS, 4)]
    assert first == ["a1", "a2", "a3", "a4"]
    assert second == ["a5", "a6", "a7", "a8"]


def test_claim_cost_is_index_lookups_per_waiting_company(conn: psycopg.Connection[Any]) -> None:
    """A company's backlog is read only as far as its share: the plan touches the fair index, never
    scans the whole table, and the rows read stay near the batch's size."""
    insert_jobs(conn, {"a": "standard", "b": "standard"}, [*backlog("a", 3000), Queued("b", "b1", 5000)])
    conn.execute("ANALYZE ingest_jobs")
    from core.ingest.claim import FAIR_CLAIM_SQL

    params = {"n": 8, "default_weight": 4, "tiers": ["standard"], "weights": [4]}
    with conn.transaction():
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + FAIR_CLAIM_SQL, params).fetchone()[0]  # type: ignore[index]
    nodes = list(walk(plan[0]["Plan"]))
    jobs_read = [n for n in nodes if n.get("Relation Name") == "ingest_jobs"]
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in jobs_read), \
        [(n["Node Type"], n.get("Index Name")) for n in jobs_read]
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in jobs_read) < 100


def walk(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from walk(child)


# --- the pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("weights", "n", "expected"), [
    ({1: 4, 2: 4}, 8, {1: 4, 2: 4}),
    ({1: 4, 2: 1}, 32, {1: 26, 2: 7}),  # rounded up: 33 candidates for 32 places
    ({1: 16, 2: 1}, 17, {1: 16, 2: 1}),
    ({1: 1}, 5, {1: 5}),
    ({1: 1, 2: 1, 3: 1}, 2, {1: 1, 2: 1, 3: 1}),
])
def test_shares(weights: dict[int, int], n: int, expected: dict[int, int]) -> None:
    assert shares(weights, n) == expected


def test_two_backlogs_share_batches_by_their_weights() -> None:
    a = Waiting(1, 4, tuple((T0 + timedelta(seconds=i), i) for i in range(1, 200)))
    f = Waiting(2, 1, tuple((T0 + timedelta(seconds=i), 1000 + i) for i in range(1, 200)))
    order = claim_order([a, f], 32)
    assert len(order) == 32
    assert sum(1 for i in order if i < 1000) == 26  # f's 7th is the last tag: it waits for the next batch


@pytest.mark.parametrize(("items", "asked", "expected"), [
    (1, None, Lane("interactive", 0.0)),
    (2, None, Lane("bulk", 30.0)),
    (1000, None, Lane("bulk", 30.0)),
    (1, "bulk", Lane("bulk", 30.0)),
    (500, "interactive", Lane("interactive", 0.0)),
])
def test_intake_lane(items: int, asked: Any, expected: Lane) -> None:
    assert intake_lane(items, asked, 1, 30.0) == expected


def test_priority_header() -> None:
    assert parse_priority(None) is None
    assert parse_priority(" Bulk ") == "bulk"
    assert parse_priority("interactive") == "interactive"
    with pytest.raises(ValueError, match="Ingest-Priority"):
        parse_priority("urgent")


def test_claim_weights_from_the_policy() -> None:
    policy = parse_policy("defaultTier: standard\ntiers:\n"
                          "  free: {ratePerSecond: 5, burst: 20, ingestWeight: 1}\n"
                          "  standard: {ratePerSecond: 100, burst: 200, ingestWeight: 4}\n"
                          "  premium: {ratePerSecond: 500, burst: 1000, ingestWeight: 16}\n", "tenants.yaml")
    assert claim_weights(policy) == CLAIM_WEIGHTS


@pytest.mark.parametrize(("rows", "top", "expected"), [
    ([], 3, []),
    ([Backlog("a", 5, 10.0), Backlog("b", 9, 1.0)], 3, [Backlog("b", 9, 1.0), Backlog("a", 5, 10.0)]),
    ([Backlog("a", 5, 10.0), Backlog("b", 9, 1.0), Backlog("c", 1, 50.0), Backlog("d", 2, 3.0)], 2,
     [Backlog("b", 9, 1.0), Backlog("a", 5, 10.0), Backlog(OTHER, 3, 50.0)]),
    ([Backlog("a", 5, 10.0), Backlog("b", 5, 20.0)], 1, [Backlog("a", 5, 10.0), Backlog(OTHER, 5, 20.0)]),
    ([Backlog("a", 0, 4.0), Backlog("b", 2, 1.0)], 0, [Backlog(OTHER, 2, 4.0)]),
])
def test_top_backlogs(rows: list[Backlog], top: int, expected: list[Backlog]) -> None:
    assert top_backlogs(rows, top) == expected


def test_a_claim_behind_another_workers_batch_takes_the_companies_it_left(
        conn: psycopg.Connection[Any], db_url: str) -> None:
    """More companies waiting than a batch, each one job: the first worker holds the batch's companies'
    jobs; the second must claim the others' instead of an empty batch (and a nap) while they wait."""
    ids, _ = insert_jobs(conn, {"x": "standard", "y": "standard", "z": "standard"},
                         [Queued("x", "x1", 5), Queued("y", "y1", 3), Queued("z", "z1", 4)])
    labels = {v: k for k, v in ids.items()}
    with psycopg.connect(db_url) as other, conn.transaction(), other.transaction():
        first = [labels[r[0]] for r in claim_jobs(conn, "fair", CLAIM_WEIGHTS, 2)]
        second = [labels[r[0]] for r in claim_jobs(other, "fair", CLAIM_WEIGHTS, 2)]
    assert first == ["y1", "z1"]
    assert second == ["x1"]
