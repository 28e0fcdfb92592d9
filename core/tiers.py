"""Tiers: what a company may do, by the tier the tenants policy gives it (pure: no I/O).

``policies/tenants.yaml`` (kind ``tenants``) names the tiers and the default one::

    kind: tenants
    defaultTier: standard
    tiers:
      standard: {ratePerSecond: 100, burst: 200, ingestWeight: 1, maxDocuments: 100000,
                 maxStoredBytes: 1gb, maxK: 100}

A company's tier is ``companies.tier`` (``opsctl tenant create|update --tier``); a company without
one, or naming a tier the policy no longer has, gets ``defaultTier``. What lives here:

- the policy's model (``TenantsPolicy``, checked by ``opsctl policy validate``);
- the rate limit's arithmetic (``gcra``: the generic cell rate algorithm, the same steps as the
  Redis script of :mod:`core.sharedlimit`) and the answer's headers (``rate_headers``);
- the quota decisions (``documents_quota``, ``k_quota``): each refusal names its quota.

``ingestWeight`` is the tier's share in the fair ingest queue (issue 15 §1): a tier with weight 4
gets four claims for every one of a weight-1 tier when both wait.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from core.cursor import MAX_SEARCH_DEPTH

TIER_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
MAX_RATE = 1_000_000.0
MAX_COUNT = 10**12
BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
              "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"\A\s*(\d+)\s*([a-z]*)\s*\Z")


def parse_size(value: object) -> object:
    """``"1gb"``, ``"512mib"`` or an integer as bytes; anything else is left for the model to refuse."""
    if isinstance(value, str):
        found = _SIZE.match(value.lower())
        if not found or found.group(2) not in BYTE_UNITS:
            raise ValueError(f"not a size: {value!r} (an integer of bytes, or e.g. 500mb, 2gib)")
        return int(found.group(1)) * BYTE_UNITS[found.group(2)]
    return value


Bytes = Annotated[int, BeforeValidator(parse_size), Field(ge=1, le=MAX_COUNT * 1000)]


class Tier(BaseModel):
    """One tier's limits; a quota left out (or null) is unlimited."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True, allow_inf_nan=False)

    rate_per_second: float = Field(alias="ratePerSecond", gt=0, le=MAX_RATE,
                                   description="authenticated requests per second, across every API process")
    burst: int = Field(ge=1, le=10**9, description="requests allowed at once above the rate")
    ingest_weight: int = Field(1, alias="ingestWeight", ge=1, le=1000,
                               description="share of the fair ingest queue (issue 15 §1)")
    max_documents: int | None = Field(None, alias="maxDocuments", ge=1, le=MAX_COUNT)
    max_stored_bytes: Bytes | None = Field(None, alias="maxStoredBytes")
    max_k: int = Field(100, alias="maxK", ge=1, le=MAX_SEARCH_DEPTH, description="the largest `k` of a search")

    @property
    def has_document_quotas(self) -> bool:
        return self.max_documents is not None or self.max_stored_bytes is not None


class TenantsPolicy(BaseModel):
    """``policies/tenants.yaml``: the tiers and the default one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True, allow_inf_nan=False)

    default_tier: str = Field(alias="defaultTier")
    tiers: dict[str, Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> TenantsPolicy:
        for name in self.tiers:
            if not TIER_NAME.match(name):
                raise ValueError(f"tier name {name!r}: lower-case letters, digits, '-' and '_', at most 63")
        if self.default_tier not in self.tiers:
            raise ValueError(f"defaultTier {self.default_tier!r} is not one of the tiers "
                             f"({', '.join(sorted(self.tiers))})")
        return self

    @property
    def has_document_quotas(self) -> bool:
        return any(t.has_document_quotas for t in self.tiers.values())

    @property
    def single_tier(self) -> bool:
        """One tier only: every company holds it, so no company's tier name need be read."""
        return len(self.tiers) == 1

    def tier_of(self, name: str | None) -> tuple[str, Tier]:
        """A company's tier by the name it holds: the default for none, or one the policy dropped."""
        if name is not None and name in self.tiers:
            return name, self.tiers[name]
        return self.default_tier, self.tiers[self.default_tier]


def builtin_policy(rate_per_second: float, burst: int, max_k: int) -> TenantsPolicy:
    """The policy without a tenants.yaml: one tier, ``default``, of the settings' rate and k, no quotas."""
    return TenantsPolicy.model_validate({"defaultTier": "default", "tiers": {
        "default": {"ratePerSecond": float(rate_per_second), "burst": burst, "maxK": max_k}}})


def parse_policy(text: str, file: str) -> TenantsPolicy:
    """A tenants policy from its YAML text; a ConfigError names the file, the line and the key of
    the first problem (``opsctl policy validate`` lists them all)."""
    import yaml
    from pydantic import ValidationError

    from core import safeyaml
    from core.errors import ConfigError

    try:
        data, lines = safeyaml.parse(text)
    except (safeyaml.Refused, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: not a valid tenants policy: {exc}") from None
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "kind"}
    try:
        return TenantsPolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
        where = f"{file}:{line}" if line else file
        key = ".".join(str(p) for p in loc)
        raise ConfigError(f"{where}: {key}: {str(err['msg']).removeprefix('Value error, ')}") from None


def check_tier_name(policy: TenantsPolicy, name: str) -> str:
    """``name`` if the policy defines it, else a ValueError naming the tiers it has."""
    if name not in policy.tiers:
        raise ValueError(f"no tier {name!r} in the tenants policy (tiers: {', '.join(sorted(policy.tiers))})")
    return name


# --- the rate limit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Charge:
    """One request charged to a bucket: allowed or not, what is left, and the next state.

    ``tat`` is the theoretical arrival time of GCRA: the bucket is full again at ``tat``; a request
    is allowed while ``tat`` after it stays within ``burst`` emission intervals of now."""

    allowed: bool
    remaining: int
    reset: float  # seconds until the bucket is full again
    retry_after: float  # seconds until one request would be allowed (0 when allowed)
    tat: float


def gcra(tat: float | None, now: float, rate: float, burst: int) -> Charge:
    """Charge one request to a bucket of ``burst`` requests refilled at ``rate`` per second.

    The Lua script of :mod:`core.sharedlimit` runs these same steps in Redis (``tat`` stored per
    company); ``tests/test_tiers.py`` checks both against one table."""
    interval = 1.0 / rate
    capacity = burst * interval
    base = now if tat is None else max(tat, now)
    new_tat = base + interval
    if new_tat - now > capacity + 1e-9:
        wait = new_tat - now - capacity
        left = max(0.0, base - now)
        return Charge(False, 0, left, wait, base)
    remaining = math.floor((capacity - (new_tat - now)) / interval + 1e-9)
    return Charge(True, remaining, new_tat - now, 0.0, new_tat)


def ceil_seconds(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))


def rate_headers(charge: Charge, rate: float, burst: int) -> dict[str, str]:
    """The answer's rate-limit fields (draft-ietf-httpapi-ratelimit-headers-06 and earlier):
    ``RateLimit-Limit`` the burst, ``RateLimit-Remaining`` the requests left now,
    ``RateLimit-Reset`` the seconds until the bucket is full again, ``RateLimit-Policy`` the burst
    and the window it refills in (``w``, seconds); ``Retry-After`` on a refusal."""
    headers = {
        "RateLimit-Limit": str(burst),
        "RateLimit-Remaining": str(charge.remaining),
        "RateLimit-Reset": str(ceil_seconds(charge.reset)),
        "RateLimit-Policy": f"{burst};w={max(1, math.ceil(burst / rate))}",
    }
    if not charge.allowed:
        headers["Retry-After"] = str(max(1, ceil_seconds(charge.retry_after)))
    return headers


# --- quotas --------------------------------------------------------------------------------------

QuotaCode = Literal["quota_documents", "quota_bytes", "k_too_large"]


@dataclass(frozen=True)
class QuotaRefusal:
    """A quota a request would exceed: its code, the limit and what the request would make of it."""

    code: QuotaCode
    limit: int
    would_be: int

    @property
    def message(self) -> str:
        what = {"quota_documents": "documents stored or queued", "quota_bytes": "bytes of text stored or queued",
                "k_too_large": "results asked for (k)"}[self.code]
        return f"over the tier's quota: {self.would_be} {what}, the limit is {self.limit}"


def documents_quota(tier: Tier, documents: int, stored_bytes: int) -> QuotaRefusal | None:
    """Whether a company may hold ``documents`` documents of ``stored_bytes`` bytes of text (the
    state after a request: what it holds, minus what the request replaces, plus what it sends)."""
    if tier.max_documents is not None and documents > tier.max_documents:
        return QuotaRefusal("quota_documents", tier.max_documents, documents)
    if tier.max_stored_bytes is not None and stored_bytes > tier.max_stored_bytes:
        return QuotaRefusal("quota_bytes", tier.max_stored_bytes, stored_bytes)
    return None


def k_quota(tier: Tier, k: int) -> QuotaRefusal | None:
    return QuotaRefusal("k_too_large", tier.max_k, k) if k > tier.max_k else None


def batch_usage(docs: list[tuple[str, int]]) -> tuple[list[str], int]:
    """A batch's distinct external ids and the bytes it leaves: a key sent twice counts once, its
    last text (the one the worker applies)."""
    last: dict[str, int] = {}
    for external_id, size in docs:
        last[external_id] = size
    return list(last), sum(last.values())
