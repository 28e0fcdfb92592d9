"""The cache policy's pure decisions, by tables; the policy file and its validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.cache import parse_policy_hash
from opsctl.cachepolicy.plan import (
    CONFIG,
    PUBLISH,
    SEARCH_HIT_RATE,
    Change,
    RedisState,
    SearchHitRate,
    bad_policy_report,
    hit_rate,
    hit_rate_report,
    plan_cache,
    querylog_hours,
    summary,
    top_queries,
    verdict,
)
from opsctl.cachepolicy.policy import CachePolicy, parse_size
from opsctl.policy import PolicyError, load
from tests.conftest import project_root

MB = 1024 * 1024
DEFAULT = CachePolicy()
IN_EFFECT = {"ttl_search": 300, "ttl_document": 300, "ttl_auth": 30, "querylog_max": 500, "querylog_hours": 24}


def policy(**changes: object) -> CachePolicy:
    return CachePolicy.model_validate(changes)


@pytest.mark.parametrize(("state", "wanted", "expected"), [
    (RedisState(256 * MB, "allkeys-lru", IN_EFFECT), DEFAULT, []),
    (RedisState(0, "noeviction", {}), DEFAULT,
     [Change(CONFIG, "maxmemory", 0, 256 * MB), Change(CONFIG, "maxmemory-policy", "noeviction", "allkeys-lru"),
      Change(PUBLISH, "ttl_search", None, 300), Change(PUBLISH, "ttl_document", None, 300),
      Change(PUBLISH, "ttl_auth", None, 30),
      Change(PUBLISH, "querylog_max", None, 500), Change(PUBLISH, "querylog_hours", None, 24)]),
    (RedisState(256 * MB, "allkeys-lru", IN_EFFECT), policy(ttlSeconds={"searchResults": 60}),
     [Change(PUBLISH, "ttl_search", 300, 60)]),
    (RedisState(256 * MB, "allkeys-lru", IN_EFFECT), policy(redis={"maxmemory": "1gb"}),
     [Change(CONFIG, "maxmemory", 256 * MB, 1024 * MB)]),
    (RedisState(256 * MB, "allkeys-lru", {**IN_EFFECT, "ttl_auth": 5}),
     policy(redis={"maxmemoryPolicy": "volatile-ttl"}, ttlSeconds={"apiKeys": 0}),
     [Change(CONFIG, "maxmemory-policy", "allkeys-lru", "volatile-ttl"), Change(PUBLISH, "ttl_auth", 5, 0)]),
], ids=["in-effect", "fresh-redis", "ttl-only", "maxmemory-only", "policy-and-ttl-off"])
def test_plan_cache(state: RedisState, wanted: CachePolicy, expected: list[Change]) -> None:
    assert plan_cache(state, wanted) == expected


@pytest.mark.parametrize(("text", "size"), [
    ("256mb", 256 * MB), ("1gb", 1024**3), ("1g", 10**9), ("100k", 100_000), ("64KB", 65536), ("2048", 2048),
    (" 5 mb ", 5 * MB), (4096, 4096),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "mb", "1.5gb", "-1mb", "10tb"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(("hits", "misses", "rate", "target", "word"), [
    (0, 0, None, 0.5, "no lookups"),
    (3, 2, 0.6, 0.5, "met"),
    (1, 3, 0.25, 0.5, "below target"),
    (5, 5, 0.5, 0.5, "met"),
    (0, 7, 0.0, 0.0, "met"),
])
def test_hit_rate_and_verdict(hits: int, misses: int, rate: float | None, target: float, word: str) -> None:
    assert hit_rate(hits, misses) == rate
    assert verdict(rate, target) == word


@pytest.mark.parametrize(("measured", "target", "rate", "word", "text"), [
    # errors are lookups that found nothing: they count as misses
    (SearchHitRate("prometheus", 12, 3, 1, 3600), 0.5, 0.75, "met",
     "75.0% of 16 lookups over the last 1h (Prometheus); target 50%: met"),
    (SearchHitRate("prometheus", 12.4, 4.1, 0, 300), 0.9, 0.7515, "below target",
     "75.2% of 16 lookups over the last 5m (Prometheus); target 90%: below target"),
    (SearchHitRate("api", 1, 1, 0), 0.5, 0.5, "met",
     "50.0% of 2 lookups over the API process's lifetime (its /metrics: no Prometheus); target 50%: met"),
    (SearchHitRate("prometheus", window_seconds=90), 0.5, None, "no lookups",
     "no lookups over the last 90s (Prometheus); target 50%"),
    (SearchHitRate("prometheus", 5, 0, 0, 60, error="Prometheus at http://p failed: refused"), 0.855, None, "unknown",
     "unknown: Prometheus at http://p failed: refused; target 85.5%"),
    (SearchHitRate("none", error="no Prometheus and no API"), 0.5, None, "unknown",
     "unknown: no Prometheus and no API; target 50%"),
])
def test_search_hit_rate_report(measured: SearchHitRate, target: float, rate: float | None, word: str,
                                text: str) -> None:
    report = hit_rate_report(measured, target)
    assert (report["hit_rate"], report["verdict"], report["text"]) == (rate, word, text)
    assert report["source"] == measured.source and report["window_seconds"] == measured.window_seconds
    assert report["definition"] == SEARCH_HIT_RATE and "near cache" in SEARCH_HIT_RATE
    assert report["policy_error"] is None


def test_a_policy_that_cannot_be_read_gives_an_unknown_hit_rate_naming_it() -> None:
    problem = "policies/cache.yaml:3: hitRate.target: Input should be a valid number"
    report = bad_policy_report(problem)
    assert (report["hit_rate"], report["verdict"], report["target"], report["source"]) == (
        None, "unknown", None, "none")
    assert report["text"] == f"unknown: invalid policy: {problem}" and report["policy_error"] == problem
    assert set(report) == set(hit_rate_report(SearchHitRate("none"), 0.5)), "the same fields as any report"


@pytest.mark.parametrize(("buckets", "n", "expected"), [
    ([], 5, []),
    ([{"a": 3.0, "b": 1.0}], 1, [("a", 3.0)]),
    ([{"a": 1.0, "b": 2.0}, {"a": 2.0, "c": 2.0}], 3, [("a", 3.0), ("b", 2.0), ("c", 2.0)]),
    ([{"z": 1.0, "y": 1.0}], 5, [("y", 1.0), ("z", 1.0)]),
], ids=["empty", "top-one", "summed-across-hours", "ties-by-text"])
def test_top_queries(buckets: list[dict[str, float]], n: int, expected: list[tuple[str, float]]) -> None:
    assert top_queries(buckets, n) == expected


@pytest.mark.parametrize(("now", "hours", "expected"), [
    (3600 * 10 + 5, 3, [10, 9, 8]),
    (3600 * 10, 1, [10]),
    (3600 * 10 - 1, 2, [9, 8]),
])
def test_querylog_hours(now: float, hours: int, expected: list[int]) -> None:
    assert querylog_hours(now, hours) == expected


def test_summary_sentences() -> None:
    assert summary([], True) == "cache policy already in effect"
    one = [Change(PUBLISH, "ttl_search", 300, 60)]
    assert summary(one, False) == "1 change planned (ttl_search 300 → 60)"
    assert summary([*one, Change(CONFIG, "maxmemory", None, 5)], True) == \
        "2 changes applied (ttl_search 300 → 60, maxmemory unset → 5 B)"
    assert summary([Change(CONFIG, "maxmemory", 0, 256 * 1024**2), Change(CONFIG, "maxmemory", 1536 * 1024, 10**9)],
                   False) == "2 changes planned (maxmemory unlimited → 256 MiB, maxmemory 1.5 MiB → 953.7 MiB)"


@pytest.mark.parametrize(("raw", "parsed"), [
    ({}, {}),
    ({b"ttl_search": b"60", b"ttl_auth": b"0"}, {"ttl_search": 60, "ttl_auth": 0}),
    ({b"ttl_search": b"soon", b"other": b"1", b"ttl_auth": b"-3"}, {}),
])
def test_parse_policy_hash(raw: dict[bytes, bytes], parsed: dict[str, int]) -> None:
    assert parse_policy_hash(raw) == parsed


def test_shipped_policy_validates() -> None:
    path = project_root() / "policies" / "cache.yaml"
    assert load(CachePolicy, "cache", path) == CachePolicy()
    proc = subprocess.run([sys.executable, "-m", "opsctl.cli", "policy", "validate", str(path)],
                          capture_output=True, text=True, cwd=project_root(), timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("body", "message"), [
    ("redis:\n  maxmemoryPolicy: noeviction\n", "cache.yaml:2: redis.maxmemoryPolicy: must be one of"),
    ("redis:\n  maxmemory: 10kb\n", "cache.yaml:2: redis.maxmemory: maxmemory must be at least 1mb"),
    ("ttlSeconds:\n  searchResults: -1\n", "cache.yaml:2: ttlSeconds.searchResults: Input should be greater"),
    ("hitRate:\n  target: 1.5\n", "cache.yaml:2: hitRate.target: Input should be less than or equal to 1"),
    ("ttl:\n  search: 5\n", "cache.yaml:1: ttl: Extra inputs are not permitted"),
])
def test_invalid_policies_name_line_and_path(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "cache.yaml"
    path.write_text(body)
    with pytest.raises(PolicyError) as caught:
        load(CachePolicy, "cache", path)
    assert message in str(caught.value)
