"""Dependencies: the services, who is calling (key + rate limit), the admin token.

Who is calling is settled in two steps, so that a stranger costs as little as possible:

- ``screen`` (on the event loop, no I/O, before the body is read): no key is a 401, or a 429 once
  the client's address has failed too often. A route with a body calls it before reading one.
- ``authenticate`` (blocking: in the route's worker thread, before its body is parsed): an
  address that has failed too often is refused (429) before any lookup, unless its key is one
  this process verified within the key-lookup TTL; then the key is looked up (Redis, then
  PostgreSQL) and the company charged one token.

``PrincipalDep`` does both for routes without a body (two hops: auth, then their work); the routes
with a body (documents, search, webhooks) call ``screen`` and ``authenticate`` themselves, around
reading it, so auth, parsing and their work share one hop. Every dependency here is ``async`` and
does no blocking I/O, so none costs a hop of its own. The security schemes they check are declared
to OpenAPI by ``TENANT_AUTH`` / ``ADMIN_AUTH``.

Rate limits: a company's bucket is charged only once a request proved it acts for that company
(a valid key here, a verified signature in the webhook route); a request that fails to
authenticate is charged to its client address instead (``refuse_stranger``; an IPv6 client's
/64), so nobody can drain a tenant's limit by naming it, and fake ids make no buckets.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from core import logs, metrics
from core.api.errors import ApiError, rate_limited
from core.api.middleware import RATE_HEADERS
from core.api.services import Services
from core.db import read_connection
from core.ratelimit import address_bucket, retry_after_header
from core.tenants import Principal, recently_verified, resolve_principal
from core.tiers import rate_headers

if TYPE_CHECKING:
    import psycopg

    from core.redisbatch import Batch
    from core.sharedlimit import AheadCharge

# what the OpenAPI document declares (``openapi.build``); the headers are read by the functions below
SECURITY_SCHEMES = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "a tenant API key (`opsctl tenant create` prints one): `Bearer ok_…`"},
    "AdminToken": {"type": "http", "scheme": "bearer", "description": "`OPSCTL_ADMIN_TOKEN`"},
}
TENANT_AUTH: dict[str, Any] = {"security": [{"ApiKey": []}]}
ADMIN_AUTH: dict[str, Any] = {"security": [{"AdminToken": []}]}
MISSING_KEY = "missing API key: send Authorization: Bearer <key>"


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if the request sends one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if token and scheme.lower() == "bearer" else None


@dataclass(slots=True)
class Caller:
    """Who sent a request, before anything is looked up: the bearer key (if any) and the address's
    rate-limit bucket (``core.ratelimit.address_bucket``)."""

    key: str | None
    address: str


def caller_of(request: Request) -> Caller:
    return Caller(bearer(request), address_bucket(request.client.host) if request.client else "")


def refuse_stranger(services: Services, address: str, code: str, message: str) -> NoReturn:
    """Refuse a request that failed to authenticate: 401, or 429 once its address has failed too often."""
    wait = services.strangers.take(address, time.monotonic())
    if wait > 0:
        too_many_strangers(wait)
    raise ApiError(401, code, message)


def too_many_strangers(wait: float) -> NoReturn:
    metrics.RATE_LIMITED.inc()
    raise rate_limited("too many unauthenticated requests from this address; slow down", retry_after_header(wait))


def stranger_wait(services: Services, caller: Caller) -> float:
    """How long the caller's address must wait, having failed to authenticate too often (0: it need not)."""
    return services.strangers.peek(caller.address, time.monotonic())


def screen(services: Services, caller: Caller) -> None:
    """No key: 401, or 429 once the address has failed too often (no I/O: call it on the event loop)."""
    if caller.key is None:
        refuse_stranger(services, caller.address, "unauthorized", MISSING_KEY)


def charge_company(services: Services, company_id: int, tier_name: str | None,
                   ahead: AheadCharge | None = None) -> None:
    """Charge the company one request at its tier's rate (shared by every API process through
    Redis); the answer carries the ``RateLimit-*`` fields, a refusal is a 429 with ``Retry-After``.
    ``ahead``: the charge the read-ahead sent, kept when it is this one (``core.sharedlimit``)."""
    _, tier = services.tiers.tier_of(tier_name)
    charge = None if ahead is None else ahead.taken(company_id, tier)
    if charge is None:
        charge = services.limiter.charge(company_id, tier)
    fields = rate_headers(charge, tier.rate_per_second, tier.burst)
    if not charge.allowed:
        metrics.RATE_LIMITED.inc()
        raise ApiError(429, "rate_limited", "too many requests for this company; slow down", fields)
    answer = RATE_HEADERS.get()
    if answer is not None:
        answer.update(fields)


def admit(services: Services, caller: Caller) -> int:
    """Refuse, before any I/O, a caller without a key (401) or from an address that failed too often
    with a key this process has not verified (429); returns the key lookup's TTL."""
    if caller.key is None:
        refuse_stranger(services, caller.address, "unauthorized", MISSING_KEY)
    ttl = services.cache.setting("ttl_auth", services.settings.auth_cache_ttl_seconds)
    wait = stranger_wait(services, caller)
    if wait > 0 and not recently_verified(services.cache, caller.key, ttl):
        too_many_strangers(wait)  # before any lookup: a flood of made-up keys costs no query
    return ttl


def authenticate(services: Services, caller: Caller) -> Principal:
    """The company a screened caller's key acts for, charged one token (blocking: call it in a worker thread)."""
    return verify(services, caller, admit(services, caller))


def verify(services: Services, caller: Caller, ttl: int, ahead: AheadCharge | None = None,
           conn: psycopg.Connection[Any] | None = None) -> Principal:
    """``authenticate`` after ``admit`` (which returned ``ttl``): the key looked up, the company
    charged. ``ahead``: the charge the search's read-ahead sent for this key's company, kept only if
    the key is valid and the tier the same (else undone): the company pays what it would without it.
    ``conn``: a pooled connection the caller holds (autocommit) for the lookup, else one is checked out."""
    assert caller.key is not None  # (admitted)
    try:
        with read_connection(services.pool, conn) as held:
            principal = resolve_principal(held, services.cache, caller.key, ttl)
        if principal is None:
            refuse_stranger(services, caller.address, "unauthorized", "unknown or revoked API key")
        logs.note_company(principal.company_id)
        charge_company(services, principal.company_id, principal.tier, ahead)
        return principal
    finally:
        if ahead is not None:
            ahead.cancel()  # not taken: a refused key, a failed lookup (no-op once taken)


def charge_ahead(services: Services) -> Callable[[Batch, int, str | None], AheadCharge | None]:
    """What the search's read-ahead charges a company with (``core.search.ahead.ChargeAhead``)."""
    return lambda batch, company_id, tier_name: services.limiter.charge_ahead(
        batch, company_id, services.tiers.tier_of(tier_name)[1])


async def get_principal(request: Request) -> Principal:
    services, caller = services_of(request), caller_of(request)
    screen(services, caller)
    return await run_in_threadpool(authenticate, services, caller)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(request: Request) -> None:
    """The admin token, checked before anything else (a body included) is read."""
    services = services_of(request)
    token = services.settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "the admin API is disabled: set OPSCTL_ADMIN_TOKEN")
    if not hmac.compare_digest((bearer(request) or "").encode(), token.encode()):
        refuse_stranger(services, caller_of(request).address, "unauthorized",
                        "admin token required: Authorization: Bearer <admin token>")


Admin = Depends(require_admin)
