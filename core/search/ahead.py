"""Asking the cache while the database authenticates: one round trip of an uncached search fewer.

A search's cache key holds the company's data version, which the request reads from the database
with its key (``core.tenants.resolve_principal``); only then could it ask Redis. For a key this
process verified recently (its in-process lookup names the company), the company's version is
almost always the one the previous request read. So the route parses the body and sends the GET
for that version's key first, then waits on the database, then reads Redis's answer: the two
round trips overlap. When the database says another version (an ingest since), the answer is
dropped and the right key asked as before (``search(..., ahead=)`` compares the keys). Nothing
is answered from it before the key is verified: a revoked key still fails, and its body's errors
are raised only after authentication, in the same order as without the read-ahead. A key this
process has not verified is authenticated first and its body parsed after, as before.

The rate limit's charge rides in the same round trip (``core.sharedlimit.SharedLimiter.charge_ahead``),
at the tier the company held at its last request: the GET, the PTTL and the charge are one write to
Redis, read after the database answered. The charge is kept only if the lookup proves it owed
(``core.api.deps.verify``); a key revoked since, or a tier changed since, has it undone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.cache import search_key
from core.redisbatch import Batch
from core.tenants import verified_company

if TYPE_CHECKING:
    from core.cache import Cache, PendingGet
    from core.search.fusion import Ranking
    from core.search.retrieve import SearchRequest
    from core.sharedlimit import AheadCharge
    from core.tenants import Principal

VERSION_PREFIX = "version:"  # this process's copy of the last data version and tier read per company
# the charge of one request sent in a batch: (batch, company id, tier name) -> the charge, or None (Redis down)
ChargeAhead = Callable[[Batch, int, "str | None"], "AheadCharge | None"]


@dataclass
class Ahead:
    """What the route knows before authenticating: the parsed body (or the error to raise once the
    caller is authenticated), the cache read in flight (None: none was sent) and the rate limit's
    charge in flight (None: none was sent; settled by ``core.api.deps.verify``)."""

    request: SearchRequest | None
    error: Exception | None
    pending: PendingGet | None
    charge: AheadCharge | None = None
    batch: Batch | None = None

    def close(self) -> None:
        if self.charge is not None:
            self.charge.cancel()  # never settled (a refusal before authenticate): undone; else a no-op
        if self.batch is not None:
            self.batch.close()


def remember_version(cache: Cache, principal: Principal, ttl: int) -> None:
    """Keep the data version and tier this request read for the company (what the next read-ahead guesses)."""
    cache.local.put(VERSION_PREFIX + str(principal.company_id), (principal.data_version, principal.tier),
                    max(ttl, 1), time.monotonic())


def read_ahead(cache: Cache, key: str | None, auth_ttl: int, search_ttl: int,
               parse: Callable[[], SearchRequest], ranking: Ranking,
               fields: tuple[str, ...] | None = None, charge: ChargeAhead | None = None) -> Ahead | None:
    """For a key this process verified within ``auth_ttl``: the body parsed by ``parse`` and, when the
    company's last data version is known, the GET of that version's answer with these hit ``fields``
    and the request's ``charge`` at the company's last tier sent in one write (not read).
    None for any other key: authenticate first, as without the read-ahead."""
    if key is None:
        return None
    company_id = verified_company(cache, key, auth_ttl)
    if company_id is None:
        return None
    known = cache.local.get(VERSION_PREFIX + str(company_id), auth_ttl, time.monotonic())
    batch = Batch(cache)
    charged = None if known is None or charge is None else charge(batch, company_id, known[1])
    try:
        request = parse()
    except Exception as exc:  # whatever parsing refuses is raised as it is, after authentication
        batch.send()  # a request with a bad body is charged too, as without the read-ahead
        return Ahead(None, exc, None, charged, batch)
    pending = None if known is None else cache.get_raw_begin(
        search_key(company_id, int(known[0]), request.digest(ranking, fields)), near_ttl=search_ttl, batch=batch)
    batch.send()
    return Ahead(request, None, pending, charged, batch)
