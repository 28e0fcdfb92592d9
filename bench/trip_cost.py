"""``python -m bench.trip_cost``: what the search route's authentication round trips cost, old shape
against new, interleaved in one process on the same database and Redis.

The steps of an uncached search by a key this process verified, around its SQL (the same in both):

* ``two trips``: the cache GET + PTTL sent, the key lookup on a pooled connection, then the rate
  limit's script as a call of its own (one more Redis round trip), the GET read; the search's
  statement on a second checkout of the pool (as the route ran before);
* ``rate limit in the batch``: the script sent with the GET (``SharedLimiter.charge_ahead``), read
  after the lookup; still two checkouts;
* ``one checkout``: the two trips, but the lookup and the search's statement on one checkout;
* ``both`` (the route now).

The search's statement is ``SELECT 1`` here: its own cost is the same in every shape. Blocks of
``--per-block`` iterations of each shape run in turn, ``--blocks`` times (the machine's load drifts
alike over all four); printed: the median over blocks of wall ms and thread-CPU ms per iteration.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import psycopg

from bench.stack import scratch_stores
from core.cache import Cache, search_key
from core.db import read_connection
from core.redisbatch import Batch
from core.sharedlimit import SharedLimiter
from core.tenants import create_company, resolve_principal
from core.tiers import Tier

TIER = Tier.model_validate({"ratePerSecond": 1e6, "burst": 10**9})  # never refused: every iteration does the same work
TTL = 300


def shapes(pool: Any, cache: Cache, limiter: SharedLimiter, company_id: int,
           key: str) -> dict[str, Callable[[], None]]:
    def step(batched: bool, one_checkout: bool) -> None:
        batch = Batch(cache)
        with ExitStack() as held:
            charge = limiter.charge_ahead(batch, company_id, TIER) if batched else None
            pending = cache.get_raw_begin(search_key(company_id, 0, uuid.uuid4().hex), near_ttl=TTL, batch=batch)
            batch.send()
            conn = held.enter_context(read_connection(pool))
            principal = resolve_principal(conn, cache, key, TTL)
            assert principal is not None
            taken = charge.taken(principal.company_id, TIER) if charge is not None else None
            if taken is None:
                limiter.charge(principal.company_id, TIER)
            pending.result()
            if not one_checkout:
                held.close()
                conn = held.enter_context(read_connection(pool))
            conn.execute("SELECT 1", prepare=True).fetchone()
        batch.close()

    return {
        "two trips, two checkouts (before)": lambda: step(False, False),
        "rate limit in the batch": lambda: step(True, False),
        "one checkout": lambda: step(False, True),
        "both (now)": lambda: step(True, True),
    }


def measure(run: dict[str, Callable[[], None]], blocks: int, per_block: int) -> dict[str, tuple[float, float]]:
    walls: dict[str, list[float]] = {name: [] for name in run}
    cpus: dict[str, list[float]] = {name: [] for name in run}
    for _ in range(blocks):
        for name, fn in run.items():
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(per_block):
                fn()
            walls[name].append((time.perf_counter() - wall) * 1000 / per_block)
            cpus[name].append((time.thread_time() - cpu) * 1000 / per_block)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trip_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--per-block", type=int, default=200)
    opts = parser.parse_args(argv)
    with scratch_stores("opsctl-trip-cost-", "hash") as stores:
        with psycopg.connect(stores.pg.url, autocommit=True) as conn:
            made = create_company(conn, "bench-trips", actor="bench")
        run = shapes(stores.pool, stores.cache, SharedLimiter(stores.cache), made.company_id, made.api_key)
        measure(run, 2, 50)  # warm: prepared statements, the script loaded, connections open
        found = measure(run, opts.blocks, opts.per_block)
    print(f"per search, median of {opts.blocks} blocks of {opts.per_block}: wall ms / thread CPU ms")
    for name, (wall, cpu) in found.items():
        print(f"  {wall:6.3f} / {cpu:6.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
