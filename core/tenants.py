"""Companies (tenants), their API keys and webhook secrets.

API keys are shown once and stored as SHA-256 digests: they are 256-bit random strings, so a
fast digest is as safe as a slow password hash and keeps authentication to one index probe.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from core import metrics
from core.cache import Cache, auth_key
from core.db import record_event
from core.errors import ConfigError, NotFound
from core.searchtune import DATABASE_EF_SEARCH_SQL, ef_search_of

KEY_PREFIX = "ok_"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class NewTenant:
    company_id: int
    name: str
    api_key: str
    webhook_secret: str


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: one company, its current data version and the tier it holds
    (``None``: the tenants policy's default; ``core.tiers.TenantsPolicy.tier_of``); read with them,
    the database's ``hnsw.ef_search`` (``core.searchtune``; None: not read)."""

    company_id: int
    data_version: int
    ef_search: int | None = None
    tier: str | None = None


def _insert_key(conn: psycopg.Connection[Any], company_id: int) -> str:
    key = generate_api_key()
    conn.execute(
        "INSERT INTO api_keys (company_id, key_prefix, key_hash) VALUES (%s, %s, %s)",
        (company_id, key[:10], hash_key(key)),
    )
    return key


def create_company(conn: psycopg.Connection[Any], name: str, *, tier: str | None = None,
                   actor: str = "cli") -> NewTenant:
    """A new company with one API key; ``tier`` (already checked against the policy) or the default."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ConfigError("a company name is 1 to 200 characters")
    secret = "whsec_" + secrets.token_urlsafe(32)
    with conn.transaction():
        try:
            row = conn.execute(
                "INSERT INTO companies (name, webhook_secret, tier) VALUES (%s, %s, %s) RETURNING id",
                (name, secret, tier),
            ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise ConfigError(f"a company named {name!r} already exists") from exc
        assert row is not None
        company_id = int(row[0])
        key = _insert_key(conn, company_id)
        record_event(conn, actor=actor, action="tenant.create", target=f"company/{company_id}",
                     to_state=name, reason="opsctl tenant create", details={"tier": tier})
    return NewTenant(company_id, name, key, secret)


@dataclass(frozen=True)
class TierChange:
    company_id: int
    name: str
    from_tier: str | None
    to_tier: str | None
    applied: bool


def set_tier(conn: psycopg.Connection[Any], ref: str, tier: str | None, *, apply: bool,
             actor: str = "cli") -> TierChange:
    """Give a company ``tier`` (``None``: the default); only with ``apply``, audited. The next request
    of the company is limited by it (every request reads the company's row)."""
    with conn.transaction():
        company_id = find_company(conn, ref)
        row = conn.execute("SELECT name, tier FROM companies WHERE id = %s FOR UPDATE", (company_id,)).fetchone()
        assert row is not None
        change = TierChange(company_id, row[0], row[1], tier, apply and row[1] != tier)
        if change.applied:
            conn.execute("UPDATE companies SET tier = %s WHERE id = %s", (tier, company_id))
            record_event(conn, actor=actor, action="tenant.update", target=f"company/{company_id}",
                         from_state=row[1] or "(default)", to_state=tier or "(default)",
                         reason="opsctl tenant update --tier")
    return change


def find_company(conn: psycopg.Connection[Any], ref: str) -> int:
    """A company by id or by name."""
    row = conn.execute(
        "SELECT id FROM companies WHERE id::text = %s OR name = %s ORDER BY id LIMIT 1", (ref, ref)
    ).fetchone()
    if row is None:
        raise NotFound(f"no company {ref!r}")
    return int(row[0])


def rotate_key(conn: psycopg.Connection[Any], ref: str, *, keep_old: bool = False, actor: str = "cli") -> NewTenant:
    """Issue a new API key; revoke the company's other keys unless ``keep_old``."""
    with conn.transaction():
        company_id = find_company(conn, ref)
        row = conn.execute(
            "SELECT name, webhook_secret FROM companies WHERE id = %s FOR UPDATE", (company_id,)
        ).fetchone()
        assert row is not None
        revoked = 0
        if not keep_old:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE company_id = %s AND revoked_at IS NULL",
                (company_id,),
            )
            revoked = cur.rowcount
        key = _insert_key(conn, company_id)
        record_event(conn, actor=actor, action="tenant.rotate-key", target=f"company/{company_id}",
                     reason="opsctl tenant rotate-key", details={"revoked_keys": revoked})
    return NewTenant(company_id, row[0], key, row[1])


def list_companies(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute(
        """
        SELECT c.id, c.name, c.created_at, c.data_version, c.tier,
               (SELECT count(*) FROM api_keys k WHERE k.company_id = c.id AND k.revoked_at IS NULL),
               (SELECT count(*) FROM documents d WHERE d.company_id = c.id)
        FROM companies c ORDER BY c.id
        """
    ).fetchall()
    return [
        {"id": r[0], "name": r[1], "created_at": _iso(r[2]), "data_version": r[3], "tier": r[4],
         "active_keys": r[5], "documents": r[6]}
        for r in rows
    ]


def _iso(value: datetime) -> str:
    return value.isoformat()


# the key lookup alone: bench.search's baseline for what authenticating costs (resolve_principal
# reads AUTH_VERSIONS_SQL / COMPANY_VERSIONS_SQL)
AUTH_SQL = """
SELECT c.id, c.data_version FROM api_keys k JOIN companies c ON c.id = k.company_id
WHERE k.key_hash = %s AND k.revoked_at IS NULL
"""


AUTH_VERSIONS_SQL = f"""
SELECT c.id, c.data_version, c.key_version, {DATABASE_EF_SEARCH_SQL}, c.tier
FROM api_keys k JOIN companies c ON c.id = k.company_id
WHERE k.key_hash = %s AND k.revoked_at IS NULL
"""
COMPANY_VERSIONS_SQL = f"SELECT data_version, key_version, {DATABASE_EF_SEARCH_SQL}, tier FROM companies WHERE id = %s"


def resolve_principal(conn: psycopg.Connection[Any], cache: Cache, key: str, ttl: int) -> Principal | None:
    """The company an API key acts for, with the cached key lookup checked against the database.

    A cached lookup holds (company, key version). The company's row is read on every request
    anyway (its data version keys the search cache); when its key version moved (a key of the
    company was revoked, by ``rotate-key`` or by hand: a trigger bumps it), the cached lookup is
    ignored and the key looked up again. So a revoked key stops working at once, Redis up or down,
    which is also what lets this process keep its own copy of the lookup (``local_ttl``). The same
    statement reads the database's ``hnsw.ef_search`` (``core.searchtune``).
    """
    digest = hash_key(key)
    lookup = auth_key(digest)
    cached, _ = cache.get_json(lookup, metrics.AUTH_CACHE, local_ttl=ttl)
    if isinstance(cached, list) and len(cached) == 2:
        company_id, key_version = int(cached[0]), int(cached[1])
        row = conn.execute(COMPANY_VERSIONS_SQL, (company_id,), prepare=True).fetchone()
        if row is not None and int(row[1]) == key_version:
            return Principal(company_id, int(row[0]), ef_search_of(row[2]), row[3])
        cache.local.drop(lookup)
    row = conn.execute(AUTH_VERSIONS_SQL, (digest,), prepare=True).fetchone()
    if row is None:
        return None
    cache.set_json(lookup, [int(row[0]), int(row[2])], ttl, local=True)
    return Principal(int(row[0]), int(row[1]), ef_search_of(row[3]), row[4])


def verified_company(cache: Cache, key: str, ttl: int) -> int | None:
    """The company of ``key`` when this process verified it within its lookup TTL (the in-process
    copy ``resolve_principal`` keeps: [company id, key version]); None otherwise. No I/O."""
    lookup = cache.local.get(auth_key(hash_key(key)), ttl, time.monotonic())
    return int(lookup[0]) if isinstance(lookup, list) and len(lookup) == 2 else None


def recently_verified(cache: Cache, key: str, ttl: int) -> bool:
    """Whether this process verified ``key`` within its lookup TTL (its in-process copy): no I/O."""
    return verified_company(cache, key, ttl) is not None


def company_secret(conn: psycopg.Connection[Any], company_id: int) -> tuple[str, int] | None:
    row = conn.execute("SELECT webhook_secret, data_version FROM companies WHERE id = %s", (company_id,)).fetchone()
    return (str(row[0]), int(row[1])) if row else None


def company_tier(conn: psycopg.Connection[Any], company_id: int) -> str | None:
    """The tier a company holds (``None``: the default)."""
    row = conn.execute("SELECT tier FROM companies WHERE id = %s", (company_id,), prepare=True).fetchone()
    return None if row is None else row[0]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Opsctl-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


SIGNATURE_TIMESTAMP = re.compile(r"\A[0-9]{1,12}\Z")  # unix seconds, ASCII digits only
SIGNATURE_MAC = re.compile(r"\A[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True)
class Signed:
    """A verified signature: its timestamp, and the ``v1`` MAC that matched (lower-case hex)."""

    timestamp: int
    mac: str


def check_signature(secret: str, header: str | None, body: bytes, now: float, tolerance: int) -> Signed | str:
    """Check a webhook signature: the ``Signed`` it is, or why not (pure).

    Any header a client can send is only a reason: a ``t`` must be ASCII digits (at most 12, so
    the clock arithmetic stays exact), a ``v1`` 64 hex digits."""
    if not header:
        return "missing X-Opsctl-Signature header"
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if not stamps or not SIGNATURE_TIMESTAMP.match(stamps[0]):
        return "malformed X-Opsctl-Signature header: expected t=<unix seconds>,v1=<hex>"
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return f"stale signature: timestamp is {int(now - timestamp)} s from now (limit {tolerance} s)"
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    macs = [v.lower() for v in parts.get("v1", []) if SIGNATURE_MAC.match(v)]
    if not any(hmac.compare_digest(expected, candidate) for candidate in macs):
        return "signature does not match"
    return Signed(timestamp, expected)


def verify_signature(secret: str, header: str | None, body: bytes, now: float, tolerance: int) -> str | None:
    """``check_signature``'s reason, or None when the signature is valid (pure)."""
    checked = check_signature(secret, header, body, now, tolerance)
    return checked if isinstance(checked, str) else None


REPLAY_PREFIX = "opsctl:webhook:"


def replay_record(company_id: int, signed: Signed, now: float, tolerance: int) -> tuple[str, int]:
    """Where the answer to a signed webhook is remembered, and for how long: while its signature
    could still be accepted (until ``t + tolerance``), so a replay is recognized for as long as it
    could be sent (pure)."""
    return (f"{REPLAY_PREFIX}{company_id}:{signed.timestamp}:{signed.mac}",
            max(1, math.ceil(signed.timestamp + tolerance - now) + 1))
