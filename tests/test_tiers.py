"""Tiers (core.tiers): the rate limit's arithmetic, the answer's headers, the quota decisions and
the tenants policy, as tables; the Redis script against the same table; the CLI's --tier."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.errors import ConfigError
from core.tiers import (
    Charge,
    TenantsPolicy,
    Tier,
    batch_usage,
    builtin_policy,
    documents_quota,
    gcra,
    k_quota,
    parse_policy,
    rate_headers,
)

TIER = Tier.model_validate({"ratePerSecond": 2.0, "burst": 3, "maxDocuments": 10, "maxStoredBytes": "1kb",
                            "maxK": 20})

# (arrival times of requests at rate 2/s, burst 3) -> (allowed, remaining, retry_after) of each
GCRA_CASES = [
    ([0, 0, 0, 0], [(True, 2, 0), (True, 1, 0), (True, 0, 0), (False, 0, 0.5)]),
    ([0, 0, 0, 0.5], [(True, 2, 0), (True, 1, 0), (True, 0, 0), (True, 0, 0)]),
    ([0, 0, 0, 0.25, 0.5], [(True, 2, 0), (True, 1, 0), (True, 0, 0), (False, 0, 0.25), (True, 0, 0)]),
    ([0, 10], [(True, 2, 0), (True, 2, 0)]),  # a bucket idle long enough is full again
    ([0, 0, 0, 1.0], [(True, 2, 0), (True, 1, 0), (True, 0, 0), (True, 1, 0)]),  # two tokens back in 1 s
]


@pytest.mark.parametrize(("arrivals", "expected"), GCRA_CASES)
def test_gcra(arrivals: list[float], expected: list[tuple[bool, int, float]]) -> None:
    tat = None
    got = []
    for now in arrivals:
        charge = gcra(tat, now, 2.0, 3)
        if charge.allowed:
            assert charge.tat > now
        tat = charge.tat
        got.append((charge.allowed, charge.remaining, round(charge.retry_after, 6)))
    assert got == expected


def test_a_refused_request_leaves_the_bucket_as_it_was() -> None:
    full = gcra(gcra(None, 0, 1.0, 1).tat, 0, 1.0, 1)
    assert not full.allowed and full.tat == 1.0 and full.reset == 1.0


@pytest.mark.parametrize(("charge", "rate", "burst", "expected"), [
    (Charge(True, 7, 1.5, 0, 0), 100.0, 10, {"RateLimit-Limit": "10", "RateLimit-Remaining": "7",
                                             "RateLimit-Reset": "2", "RateLimit-Policy": "10;w=1"}),
    (Charge(False, 0, 30.0, 0.2, 0), 0.5, 15, {"RateLimit-Limit": "15", "RateLimit-Remaining": "0",
                                               "RateLimit-Reset": "30", "RateLimit-Policy": "15;w=30",
                                               "Retry-After": "1"}),
    (Charge(False, 0, 9.0, 4.01, 0), 1.0, 5, {"RateLimit-Limit": "5", "RateLimit-Remaining": "0",
                                              "RateLimit-Reset": "9", "RateLimit-Policy": "5;w=5",
                                              "Retry-After": "5"}),
    (Charge(True, 0, 0.0000000001, 0, 0), 1.0, 1, {"RateLimit-Limit": "1", "RateLimit-Remaining": "0",
                                                   "RateLimit-Reset": "0", "RateLimit-Policy": "1;w=1"}),
])
def test_rate_headers(charge: Charge, rate: float, burst: int, expected: dict[str, str]) -> None:
    assert rate_headers(charge, rate, burst) == expected


@pytest.mark.parametrize(("documents", "stored", "expected"), [
    (10, 1000, None),
    (11, 10, ("quota_documents", 10, 11)),
    (5, 1001, ("quota_bytes", 1000, 1001)),
    (11, 5000, ("quota_documents", 10, 11)),  # the documents quota is named first
])
def test_documents_quota(documents: int, stored: int, expected: tuple[str, int, int] | None) -> None:
    refusal = documents_quota(TIER, documents, stored)
    assert (None if refusal is None else (refusal.code, refusal.limit, refusal.would_be)) == expected


def test_no_quota_means_unlimited_and_k_has_its_own() -> None:
    open_tier = Tier.model_validate({"ratePerSecond": 1.0, "burst": 1})
    assert documents_quota(open_tier, 10**12, 10**15) is None
    assert k_quota(TIER, 20) is None
    refusal = k_quota(TIER, 21)
    assert refusal is not None and refusal.code == "k_too_large" and "21" in refusal.message


def test_batch_usage_counts_a_key_once_with_its_last_text() -> None:
    assert batch_usage([("a", 5), ("b", 3), ("a", 7)]) == (["a", "b"], 10)


POLICY = """kind: tenants
defaultTier: standard
tiers:
  standard: {ratePerSecond: 10, burst: 20, maxDocuments: 100, maxStoredBytes: 2mib}
  premium:
    ratePerSecond: 100
    burst: 200
    ingestWeight: 8
"""


def test_policy_tier_of_falls_back_to_the_default() -> None:
    policy = parse_policy(POLICY, "tenants.yaml")
    assert policy.tiers["standard"].max_stored_bytes == 2 * 1024 * 1024
    assert policy.tiers["premium"].ingest_weight == 8 and policy.tiers["premium"].max_k == 100
    assert policy.tier_of("premium")[0] == "premium"
    assert policy.tier_of(None)[0] == "standard"
    assert policy.tier_of("dropped")[0] == "standard"
    assert policy.has_document_quotas
    assert not builtin_policy(100.0, 200, 100).has_document_quotas
    assert builtin_policy(100.0, 200, 100).single_tier and not policy.single_tier


@pytest.mark.parametrize(("text", "message"), [
    (POLICY.replace("defaultTier: standard", "defaultTier: gold"), "defaultTier 'gold' is not one of the tiers"),
    (POLICY.replace("burst: 200", "burst: 0"), "tenants.yaml:7: tiers.premium.burst"),
    (POLICY.replace("2mib", "2zb"), "tenants.yaml:4: tiers.standard.maxStoredBytes: not a size"),
    (POLICY.replace("premium:", "Premium:"), "tier name 'Premium'"),
    (POLICY.replace("ingestWeight: 8", "ingestWeigth: 8"), "tiers.premium.ingestWeigth: Extra inputs"),
])
def test_policy_errors_name_the_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_policy(text, "tenants.yaml")


def test_policy_validate_checks_the_shipped_tenants_policy(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from opsctl.cli import main

    shipped = Path(__file__).parent.parent / "policies" / "tenants.yaml"
    assert main(["policy", "validate", str(shipped)]) == 0
    assert isinstance(parse_policy(shipped.read_text(), str(shipped)), TenantsPolicy)
    bad = tmp_path / "tenants.yaml"
    bad.write_text(POLICY.replace("burst: 20,", "burst: -1,"))
    assert main(["policy", "validate", str(bad)]) == 2
    assert f"{bad}:4: tiers.standard.burst" in capsys.readouterr().err


# -- the Redis script runs the same steps --------------------------------------------------------

def test_the_redis_script_follows_the_table(redis_url: str) -> None:
    """At a rate slow enough that no token comes back during the test, the script answers a burst
    as ``gcra`` does at one instant, and keeps the key only until the bucket is full again."""
    import redis

    from core.sharedlimit import GCRA_LUA, company_key, parse_reply

    client = redis.Redis.from_url(redis_url)
    script = client.register_script(GCRA_LUA)
    rate, burst = 0.01, 4
    got = [parse_reply(script(keys=[company_key(7)], args=[repr(rate), burst])) for _ in range(6)]
    tat, expected = None, []
    for _ in range(6):
        charge = gcra(tat, 0.0, rate, burst)
        tat = charge.tat
        expected.append(charge)
    assert [(c.allowed, c.remaining) for c in got] == [(c.allowed, c.remaining) for c in expected]
    assert [math.ceil(c.retry_after) for c in got] == [math.ceil(c.retry_after) for c in expected]
    assert 0 < client.pttl(company_key(7)) <= math.ceil(burst / rate * 1000) + 1000
    client.close()


# -- the CLI -------------------------------------------------------------------------------------

@dataclass
class Ran:
    exit_code: int
    stdout: str
    output: str


@pytest.fixture
def run_cli(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    from opsctl.cli import main

    monkeypatch.setenv("OPSCTL_DATABASE_URL", db_url)

    def run(*args: str) -> Ran:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, out + err)

    return run


def test_tenant_create_and_update_tier(conn: psycopg.Connection[Any], run_cli: Callable[..., Ran], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tenants.yaml").write_text(POLICY)
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    made = run_cli("tenant", "create", "acme", "--tier", "premium", "-o", "json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["tier"] == "premium"
    refused = run_cli("tenant", "create", "globex", "--tier", "gold")
    assert refused.exit_code == 2 and "no tier 'gold'" in refused.output
    assert conn.execute("SELECT count(*) FROM companies WHERE name = 'globex'").fetchone() == (0,)

    dry = run_cli("tenant", "update", "acme", "--tier", "standard", "-o", "json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["applied"] is False
    assert conn.execute("SELECT tier FROM companies WHERE name = 'acme'").fetchone() == ("premium",)
    done = run_cli("tenant", "update", "acme", "--tier", "standard", "--apply", "-o", "json")
    assert done.exit_code == 0 and json.loads(done.stdout)["applied"] is True
    assert conn.execute("SELECT tier FROM companies WHERE name = 'acme'").fetchone() == ("standard",)
    audit = conn.execute("SELECT from_state, to_state FROM ops_events WHERE action = 'tenant.update'").fetchall()
    assert audit == [("premium", "standard")]
    listed = run_cli("tenant", "list", "-o", "json")
    assert [row["tier"] for row in json.loads(listed.stdout)] == ["standard"]


def test_tenant_tier_without_a_policy_is_a_usage_error(run_cli: Callable[..., Ran], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCTL_POLICY_DIR", str(tmp_path))
    result = run_cli("tenant", "create", "acme", "--tier", "free")
    assert result.exit_code == 2 and "no tenants policy at" in result.output
