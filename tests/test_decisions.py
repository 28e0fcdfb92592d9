"""The pure decisions of the core, as tables of inputs → expected outputs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from core.ingest.accept import Enqueue, LatestJob, plan_accept
from core.ingest.webhooks import event_document
from core.ingest.worker import Existing, Job, backoff_seconds, plan_batch
from core.partitioning import months_to_premake
from core.ratelimit import RateLimiter, retry_after_header
from core.search.fusion import Fusion, Hit, fuse
from core.search.retrieve import use_exact
from core.tenants import sign, verify_signature
from opsctl.loader import batches, retry_delay

H1, H2 = b"\x01" * 32, b"\x02" * 32


@pytest.mark.parametrize(
    ("latest", "items", "expected"),
    [
        ({}, [("a", "upsert", H1)], [Enqueue(0, None)]),
        ({"a": LatestJob(7, "upsert", H1, "done")}, [("a", "upsert", H1)], [Enqueue(0, 7)]),
        ({"a": LatestJob(7, "upsert", H1, "queued")}, [("a", "upsert", H1)], [Enqueue(0, 7)]),
        ({"a": LatestJob(7, "upsert", H1, "done")}, [("a", "upsert", H2)], [Enqueue(0, None)]),
        ({"a": LatestJob(7, "upsert", H1, "dead")}, [("a", "upsert", H1)], [Enqueue(0, None)]),
        ({"a": LatestJob(7, "delete", None, "done")}, [("a", "delete", None)], [Enqueue(0, 7)]),
        ({"a": LatestJob(7, "delete", None, "done")}, [("a", "upsert", H1)], [Enqueue(0, None)]),
        # A then B then A again in one request: every change after the first is queued
        ({"a": LatestJob(7, "upsert", H1, "done")}, [("a", "upsert", H2), ("a", "upsert", H1)],
         [Enqueue(0, None), Enqueue(1, None)]),
        ({"a": LatestJob(7, "upsert", H1, "done")}, [("a", "upsert", H1), ("b", "upsert", H1)],
         [Enqueue(0, 7), Enqueue(1, None)]),
    ],
)
def test_plan_accept(latest: dict[str, LatestJob], items: list[tuple[str, str, bytes | None]],
                     expected: list[Enqueue]) -> None:
    assert plan_accept(latest, items) == expected


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def job(id: int, op: str = "upsert", digest: bytes | None = H1, ext: str = "a") -> Job:
    return Job(id, 1, ext, op, digest, {"text": "t"}, 0)


@pytest.mark.parametrize(
    ("jobs", "newest", "existing", "expected"),
    [
        ([job(1)], {(1, "a"): 1}, {}, [("write", "created")]),
        ([job(1)], {(1, "a"): 1}, {(1, "a"): [Existing(9, T0, H1)]}, [("noop", "unchanged")]),
        ([job(1, digest=H2)], {(1, "a"): 1}, {(1, "a"): [Existing(9, T0, H1)]}, [("write", "updated")]),
        ([job(1)], {(1, "a"): 5}, {}, [("noop", "superseded by job 5")]),
        ([job(1, "delete", None)], {(1, "a"): 1}, {(1, "a"): [Existing(9, T0, H1)]}, [("delete", "deleted")]),
        ([job(1, "delete", None)], {(1, "a"): 1}, {}, [("delete", "nothing to delete")]),
        ([job(1), job(2, digest=H2)], {(1, "a"): 2}, {},
         [("noop", "superseded by job 2"), ("write", "created")]),
    ],
)
def test_plan_batch(jobs: list[Job], newest: dict[tuple[int, str], int],
                    existing: dict[tuple[int, str], list[Existing]], expected: list[tuple[str, str]]) -> None:
    assert [(s.action, s.outcome) for s in plan_batch(jobs, newest, existing)] == expected


def test_plan_batch_update_removes_the_stored_document() -> None:
    stored = Existing(9, T0, H1)
    (step,) = plan_batch([job(1, digest=H2)], {(1, "a"): 1}, {(1, "a"): [stored]})
    assert step.remove == (stored,)


@pytest.mark.parametrize(("attempts", "expected"), [(1, 2.0), (2, 4.0), (3, 8.0), (10, 300.0)])
def test_backoff(attempts: int, expected: float) -> None:
    assert backoff_seconds(attempts, 2.0, 300.0) == expected


def hit(cid: int) -> Hit:
    return Hit(cid, cid, f"d{cid}", "", 0.0)


def rrf_fuse(rankings: list[list[Hit]], k: int) -> list[Hit]:
    """Plain reciprocal rank fusion of chunks (each list weight 1, c = 60)."""
    return fuse([(r, 1.0) for r in rankings], Fusion.rrf, k, lambda h: h.chunk_id)


def test_rrf_fuse_ranks_agreement_first() -> None:
    fused = rrf_fuse([[hit(1), hit(2), hit(3)], [hit(3), hit(1), hit(4)]], k=3)
    assert [h.chunk_id for h in fused] == [1, 3, 2]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)


def test_rrf_fuse_ties_break_by_chunk_id() -> None:
    assert [h.chunk_id for h in rrf_fuse([[hit(5)], [hit(2)]], k=2)] == [2, 5]


SECRET = "whsec_test"
BODY = b'{"id": 1}'


@pytest.mark.parametrize(
    ("header", "now", "problem"),
    [
        (sign(SECRET, 1000, BODY), 1000, None),
        (sign(SECRET, 1000, BODY), 1300, None),
        (sign(SECRET, 1000, BODY), 1301, "stale"),
        (sign(SECRET, 1000, BODY), 699, "stale"),
        (None, 1000, "missing"),
        ("t=abc,v1=00", 1000, "malformed"),
        ("v1=00", 1000, "malformed"),
        (sign("other", 1000, BODY), 1000, "does not match"),
        (f"t=1000,v1=00,{sign(SECRET, 1000, BODY).split(',')[1]}", 1000, None),  # several v1: any may match
    ],
)
def test_verify_signature(header: str | None, now: float, problem: str | None) -> None:
    result = verify_signature(SECRET, header, BODY, now, 300)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result


def test_rate_limiter_burst_then_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1, 0.0) == pytest.approx(0.5)
    assert limiter.take(2, 0.0) == 0.0, "buckets are per company"
    assert limiter.take(1, 0.5) == 0.0
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(2.1) == "3"


@pytest.mark.parametrize(
    ("now", "first", "last"),
    [
        (datetime(2026, 11, 22, tzinfo=UTC), "p2026_11", "p2027_03"),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "p2026_12", "p2027_04"),
        (datetime(2027, 1, 1, 0, 30, tzinfo=UTC), "p2027_01", "p2027_05"),
    ],
)
def test_months_to_premake(now: datetime, first: str, last: str) -> None:
    months = months_to_premake(now, 4)
    assert len(months) == 5
    assert (months[0].suffix, months[-1].suffix) == (first, last)
    assert all(a.end == b.start for a, b in itertools.pairwise(months))


@pytest.mark.parametrize(
    ("body", "external_id", "text", "title"),
    [
        (b'{"id": "e1", "text": "hi", "subject": "S"}', "src:e1", "hi", "S"),
        (b'{"message_id": 42, "body": "mail body", "title": "T"}', "src:42", "mail body", "T"),
        (b'{"id": "h", "html": "<p>Hello <b>there</b></p>"}', "src:h", " Hello  there  ", None),
        (b"plain text event", None, "plain text event", None),
    ],
)
def test_event_document(body: bytes, external_id: str | None, text: str, title: str | None) -> None:
    import hashlib

    doc = event_document("src", body)
    assert doc.external_id == (external_id or f"src:{hashlib.sha256(body).hexdigest()}")
    assert doc.text == text
    assert doc.title == title
    assert doc.metadata["source"] == "src"


def test_event_without_text_keeps_the_whole_event() -> None:
    doc = event_document("src", b'{"id": "e2", "amount": 12}')
    assert '"amount": 12' in doc.text


def test_loader_batches_by_count_and_size() -> None:
    docs = [{"external_id": str(i), "text": "x" * 100} for i in range(10)]
    assert [len(b) for b in batches(docs, 4, 10_000)] == [4, 4, 2]
    assert [len(b) for b in batches(docs, 100, 300)] == [2] * 5
    assert retry_delay(1, None) == 0.5
    assert retry_delay(3, None) == 2.0
    assert retry_delay(1, "7") == 7.0


@pytest.mark.parametrize(
    ("rows", "limit", "exact"),
    [
        (0, 10_000, True),  # an empty company: nothing to search either way
        (4_987, 10_000, True),
        (10_000, 10_000, True),  # the limit itself is still exact
        (10_001, 10_000, False),
        (45_014, 10_000, False),
        (5, 0, False),  # 0 turns exact search off
        (0, 0, False),
    ],
)
def test_use_exact_only_for_companies_within_the_limit(rows: int, limit: int, exact: bool) -> None:
    assert use_exact(rows, limit) is exact
