"""The Locust file against the real stack: every kind of request is made, none fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loadmix import Mix, Tenant, seed_documents
from bench.loadtest import Shape, create_tenants, run_locust, seed, summary, wait_done
from tests.conftest import RunningApi, drain, make_settings

REQUESTS = ("webhook", "search repeated", "search new", "document")


@pytest.fixture
def unlimited_api(db_url: str, redis_url: str) -> Iterator[RunningApi]:
    running = RunningApi(make_settings(database_url=db_url, redis_url=redis_url, rate_limit_per_second=1e6,
                                       rate_limit_burst=10**6))
    yield running
    running.close()


def test_a_short_headless_run_makes_every_request_kind_without_failures(
        unlimited_api: RunningApi, db_url: str, tmp_path: Path) -> None:
    tenants = create_tenants(db_url, 2)
    seed(unlimited_api.url, tenants, 20)
    assert drain(unlimited_api.settings, db_url) == 40  # the readers' documents exist before the run
    code = run_locust(unlimited_api.url, tenants, tmp_path, Shape("step", users=6, steps=2, seconds=6, think=0.05),
                      seed_docs=20)
    rows = {r["name"]: r for r in summary(tmp_path)}
    for name in REQUESTS:
        assert rows[name]["requests"] > 0, name
        assert rows[name]["failures"] == 0, (name, (tmp_path / "locust_failures.csv").read_text())
    assert code == 0
    assert (tmp_path / "report.html").stat().st_size > 0
    assert not (tmp_path / "tenants.json").exists()  # the keys are not left behind


def test_the_mix_repeats_popular_queries_and_never_repeats_new_ones() -> None:
    tenant = Tenant(1, "k", "s")
    mix = Mix.make(3)
    popular = [mix.popular_query(tenant) for _ in range(500)]
    new = [mix.new_query() for _ in range(500)]
    assert len(set(popular)) <= 50 and popular.count(max(set(popular), key=popular.count)) > 50  # a Zipf head
    assert len(set(new)) == 500
    other = Mix.make(9)
    assert len({other.popular_query(tenant) for _ in range(500)} & set(popular)) >= 10  # the tenant's, for all
    assert not {other.popular_query(Tenant(2, "k", "s")) for _ in range(500)} & set(popular)
    assert [d["external_id"] for d in seed_documents(3)] == ["seed-0000", "seed-0001", "seed-0002"]


def test_the_seed_wait_refuses_jobs_still_queued_and_returns_once_they_are_done(
        unlimited_api: RunningApi, db_url: str) -> None:
    tenants = create_tenants(db_url, 2)
    queued = seed(unlimited_api.url, tenants, 3)
    with pytest.raises(RuntimeError, match=r"seed jobs of company \d+: 0 dead, 3 not done within 0 s"):
        wait_done(unlimited_api.url, queued, timeout=0)  # no worker ran: all queued
    assert drain(unlimited_api.settings, db_url) == 6
    wait_done(unlimited_api.url, queued, timeout=600)
