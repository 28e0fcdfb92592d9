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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.cache import search_key
from core.tenants import verified_company

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.cache import Cache, PendingGet
    from core.search.fusion import Ranking
    from core.search.retrieve import SearchRequest

VERSION_PREFIX = "version:"  # this process's copy of the last data version read per company


@dataclass
class Ahead:
    """What the route knows before authenticating: the parsed body (or the error to raise once the
    caller is authenticated) and the cache read in flight (None: none was sent)."""

    request: SearchRequest | None
    error: Exception | None
    pending: PendingGet | None

    def close(self) -> None:
        if self.pending is not None:
            self.pending.close()


def remember_version(cache: Cache, company_id: int, version: int, ttl: int) -> None:
    """Keep the data version this request read for the company (what the next read-ahead guesses)."""
    cache.local.put(VERSION_PREFIX + str(company_id), version, max(ttl, 1), time.monotonic())


def read_ahead(cache: Cache, key: str | None, auth_ttl: int, search_ttl: int,
               parse: Callable[[], SearchRequest], ranking: Ranking,
               fields: tuple[str, ...] | None = None) -> Ahead | None:
    """For a key this process verified within ``auth_ttl``: the body parsed by ``parse`` and, when the
    company's last data version is known, the GET of that version's answer with these hit ``fields``
    sent (not read).
    None for any other key: authenticate first, as without the read-ahead."""
    if key is None:
        return None
    company_id = verified_company(cache, key, auth_ttl)
    if company_id is None:
        return None
    try:
        request = parse()
    except Exception as exc:  # whatever parsing refuses is raised as it is, after authentication
        return Ahead(None, exc, None)
    version = cache.local.get(VERSION_PREFIX + str(company_id), auth_ttl, time.monotonic())
    if version is None:
        return Ahead(request, None, None)
    digest = request.digest(ranking, fields)
    pending = cache.get_raw_begin(search_key(company_id, int(version), digest), near_ttl=search_ttl)
    return Ahead(request, None, pending)
