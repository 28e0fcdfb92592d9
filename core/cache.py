"""The Redis cache: a cache and nothing more.

Every call degrades to "miss" when Redis is slow or down: the error is counted
(``core_search_cache_requests_total{result="error"}``) and, for ``breaker_seconds`` after a
failure, Redis is not asked again, so an outage costs one short timeout, not one per request.

Keys (every one carries a TTL, except the small published policy hash)::

    opsctl:search:<company>:<data version>:<request digest>   search results (JSON)
    opsctl:doc:<company>:<data version>:<external id digest>  one document's metadata (JSON)
    opsctl:auth:<sha256 of the API key, hex>                   API-key lookup: company and key version
    opsctl:querylog:<company>:<hour>                           sorted set: normalized request → count
    opsctl:cache:policy                                        hash: TTLs and query-log size, live

The running service re-reads ``opsctl:cache:policy`` at most every ``refresh_seconds`` (through
the same breaker), so ``opsctl cache apply`` changes TTLs without a restart. When the hash is
missing or Redis is down, the settings' defaults apply.

Two things stay in the process, off the request path:

* the query log is counted in memory and written every ``querylog_flush_seconds`` by a
  background thread, in one pipelined round trip (a crash loses at most that much of it);
* API-key lookups are also kept in a small in-process map for their TTL (``get_json(...,
  local_ttl=)``). That is safe only because the caller re-validates every lookup against the
  database (the key version), so a revoked key still fails on its next request.
* a search answer is stored in Redis by a background thread (``set_raw_later``: one pipelined
  round trip per batch), so an uncached search does not wait for the SET;
* the last ``NEAR_ENTRIES_MAX`` search answers are kept in the process too (``get_raw(...,
  near_ttl=)``), in front of Redis. Their keys carry the company's data version, read from the
  database on every request, so a near answer is exactly as fresh as a Redis one; ``opsctl cache
  flush`` bumps the data version, which retires them in every process at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

from core import metrics
from core.redisbatch import Batch

log = logging.getLogger(__name__)

SEARCH_PREFIX = "opsctl:search:"
AUTH_PREFIX = "opsctl:auth:"
DOCUMENT_PREFIX = "opsctl:doc:"
QUERYLOG_PREFIX = "opsctl:querylog:"
POLICY_KEY = "opsctl:cache:policy"
# data type → key prefix (what `opsctl cache status` counts and `flush` deletes)
DATA_TYPES = {"search": SEARCH_PREFIX, "document": DOCUMENT_PREFIX, "auth": AUTH_PREFIX,
              "querylog": QUERYLOG_PREFIX}
# fields of the published policy hash, all integers
POLICY_FIELDS = ("ttl_search", "ttl_document", "ttl_auth", "querylog_max", "querylog_hours")
QUERYLOG_DEFAULTS = {"querylog_max": 500, "querylog_hours": 24}
MAX_LOGGED_REQUEST = 2048
QUERYLOG_FLUSH_SECONDS = 1.0
QUERYLOG_PENDING_MAX = 10_000  # distinct requests buffered between two flushes; more are not logged
LOCAL_ENTRIES_MAX = 10_000
NEAR_ENTRIES_MAX = 1_000  # search answers kept in each API process (k=10 of 800-character chunks: ~10 kB each)
NEAR_BYTES_MAX = 32 * 1024 * 1024  # and never more than this many bytes of them
WRITES_PENDING_MAX = 1_000  # search answers waiting for the background SET; more are kept near only


# Weighted Space-Saving (Metwally et al.): a bounded top-k counter. A request already counted, or
# room left: +n. Otherwise the least counted request makes way and the newcomer inherits its count
# + n, so any request seen more often than total/size is guaranteed to stay; counts err upward by
# at most the evicted count. Atomic per request.
COUNT_QUERY_LUA = """
local key, member, size, n = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
if redis.call('ZSCORE', key, member) or redis.call('ZCARD', key) < size then
    redis.call('ZINCRBY', key, n, member)
else
    local low = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    redis.call('ZREM', key, low[1])
    redis.call('ZADD', key, tonumber(low[2]) + n, member)
end
local excess = redis.call('ZCARD', key) - size
if excess > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, excess - 1)
end
redis.call('EXPIRE', key, ARGV[3])
return 1
"""


def search_key(company_id: int, data_version: int, digest: str) -> str:
    """Search results of one company at one data version: a newer ingest changes the key."""
    return f"{SEARCH_PREFIX}{company_id}:{data_version}:{digest}"


def auth_key(key_hash: bytes) -> str:
    return AUTH_PREFIX + key_hash.hex()


def querylog_key(company_id: int, hour: int) -> str:
    return f"{QUERYLOG_PREFIX}{company_id}:{hour}"


def hour_of(now: float) -> int:
    return int(now // 3600)


class LocalMap:
    """A bounded in-process map whose entries expire; the oldest entry makes way when full (by
    count, and by bytes when ``max_bytes`` is set: values are then ``bytes``)."""

    def __init__(self, max_entries: int = LOCAL_ENTRIES_MAX, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: dict[str, tuple[float, int, Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()  # writers only: a read is one dict lookup

    def get(self, key: str, ttl: int, now: float) -> Any:
        """The value stored under ``key`` with this same ``ttl`` and not yet expired, else None."""
        entry = self._data.get(key)
        if entry is None or entry[0] <= now or entry[1] != ttl:
            return None
        return entry[2]

    def put(self, key: str, value: Any, ttl: int, now: float, expires_in: float | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, or less: ``expires_in`` (what Redis has left)."""
        life = ttl if expires_in is None else min(float(ttl), expires_in)
        size = len(value) if self.max_bytes is not None else 0
        if life <= 0 or (self.max_bytes is not None and size > self.max_bytes // 10):
            return  # expired already, or too big to keep (a tenth of the budget at most)
        with self._lock:
            self._pop(key)
            while self._data and (len(self._data) >= self.max_entries or
                                  (self.max_bytes is not None and self._bytes + size > self.max_bytes)):
                self._pop(next(iter(self._data)))
            self._data[key] = (now + life, ttl, value)
            self._bytes += size

    def _pop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None and self.max_bytes is not None:
            self._bytes -= len(entry[2])

    def drop(self, key: str) -> None:
        with self._lock:
            self._pop(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes


class Cache:
    def __init__(self, url: str | None, timeout: float = 0.25, breaker_seconds: float = 1.0,
                 refresh_seconds: float = 5.0, querylog_flush_seconds: float = QUERYLOG_FLUSH_SECONDS) -> None:
        self.url = url
        self.breaker_seconds = breaker_seconds
        self.refresh_seconds = refresh_seconds
        self.querylog_flush_seconds = querylog_flush_seconds
        self.local = LocalMap()
        self.near = LocalMap(NEAR_ENTRIES_MAX, NEAR_BYTES_MAX)
        self._open_until = 0.0
        self._policy: dict[str, int] = {}
        self._policy_read_at = float("-inf")
        self._count_query: Any = None
        self._pending: dict[tuple[int, int, str], int] = {}
        self._pending_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        self._writes: dict[str, tuple[bytes, int]] = {}  # set_raw_later: key → (JSON, ttl), newest wins
        self._writes_ready = threading.Condition()
        self._writing = False
        self._writer: threading.Thread | None = None
        self.client: Any = None
        if url:
            import redis

            self.client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
            )

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._open_until

    def _trip(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self.breaker_seconds
        log.warning("redis unavailable (%s); caching is off for %.1f s", type(exc).__name__, self.breaker_seconds)

    def get_raw(self, key: str, counter: Counter = metrics.SEARCH_CACHE,
                near_ttl: int | None = None) -> tuple[bytes | None, str]:
        """(stored JSON text, result) where result is hit, miss or error; counted in ``counter``.

        ``near_ttl``: look in this process's near cache first, and keep a Redis hit there."""
        if near_ttl is not None:  # the near copy, else Redis, whose remaining TTL bounds the copy then kept
            pending = self.get_raw_begin(key, counter, near_ttl)
            try:
                return pending.result()
            finally:
                pending.close()  # a reply left unread (the GET refused: its PTTL): the connection back clean
        if not self.available:
            counter.labels("error").inc()
            return None, "error"
        try:
            raw = self.client.get(key)
        except Exception as exc:
            self._trip(exc)
            counter.labels("error").inc()
            return None, "error"
        counter.labels("miss" if raw is None else "hit").inc()
        return (None, "miss") if raw is None else (bytes(raw), "hit")

    def get_raw_begin(self, key: str, counter: Counter = metrics.SEARCH_CACHE, near_ttl: int = 0,
                      batch: Batch | None = None) -> PendingGet:
        """``get_raw(key, counter, near_ttl)`` in two halves: the near cache is looked in and the GET
        sent now, the answer read by ``PendingGet.result()``, so the caller can wait on something
        else (the database) meanwhile. ``PendingGet.close()`` gives up on it (counted nowhere).
        ``batch``: the GET joins these commands, sent by the caller (``core.redisbatch``)."""
        found = self.near.get(key, near_ttl, time.monotonic())
        if found is not None:
            return PendingGet(self, key, counter, near_ttl, answer=(bytes(found), "hit"))
        own = batch is None
        if batch is None:
            batch = Batch(self)
        pending = PendingGet(self, key, counter, near_ttl, batch=batch, index=batch.add("GET", key))
        batch.add("PTTL", key)
        if own:
            batch.send()
        return pending

    def get_json(self, key: str, counter: Counter = metrics.SEARCH_CACHE,
                 local_ttl: int | None = None) -> tuple[Any, str]:
        """(value, result) where result is hit, miss or error; counted in ``counter``.

        ``local_ttl``: look in the in-process map first, and keep a Redis hit there for that many
        seconds (only for values the caller re-validates)."""
        if local_ttl is not None:
            found = self.local.get(key, local_ttl, time.monotonic())
            if found is not None:
                counter.labels("hit").inc()
                return found, "hit"
        raw, result = self.get_raw(key, counter)
        if raw is None:
            return None, result
        value = json.loads(raw)
        if local_ttl is not None:
            self.local.put(key, value, local_ttl, time.monotonic())
        return value, result

    def set_json(self, key: str, value: Any, ttl: int, local: bool = False) -> bool:
        """Store ``value`` for ``ttl`` seconds; ``local``: in the in-process map too."""
        if local:
            self.local.put(key, value, ttl, time.monotonic())
        return self.set_raw(key, json.dumps(value, separators=(",", ":")).encode(), ttl)

    def set_raw_later(self, key: str, raw: bytes, ttl: int) -> bool:
        """Keep JSON text in this process's near cache now and have it stored in Redis for ``ttl``
        seconds by a background thread, off the caller's path (a search answers without waiting for
        the SET: another process may miss it for the millisecond it takes). False when Redis will
        not get it: known down, a TTL of 0, closing, or ``WRITES_PENDING_MAX`` writes waiting."""
        self.near.put(key, raw, ttl, time.monotonic())  # before the SET: expires no later than the Redis entry
        if not self.available or ttl <= 0:
            return False
        with self._writes_ready:
            if self._closing.is_set() or len(self._writes) >= WRITES_PENDING_MAX:
                return False
            self._writes[key] = (raw, ttl)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_forever, name="cache-writer", daemon=True)
                self._writer.start()
            self._writes_ready.notify_all()
        return True

    def _write_forever(self) -> None:
        while True:
            with self._writes_ready:
                while not self._writes and not self._closing.is_set():
                    self._writes_ready.wait()
                if not self._writes:
                    return  # closing, and nothing left to write
                batch, self._writes = self._writes, {}
                self._writing = True
            try:
                self._write(batch)
            finally:
                with self._writes_ready:
                    self._writing = False
                    self._writes_ready.notify_all()

    def _write(self, batch: dict[str, tuple[bytes, int]]) -> None:
        """SET every entry of ``batch``, in one pipelined round trip."""
        if not self.available:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, (raw, ttl) in batch.items():
                pipe.set(key, raw, ex=ttl)
            pipe.execute()
        except Exception as exc:
            self._trip(exc)

    def drain_writes(self, timeout: float = 10.0) -> bool:
        """Wait until the writes ``set_raw_later`` queued are made (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._writes_ready:
            while self._writes or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or (self._writer is None or not self._writer.is_alive()):
                    return not (self._writes or self._writing)
                self._writes_ready.wait(left)
        return True

    def set_raw(self, key: str, raw: bytes, ttl: int, near: bool = False) -> bool:
        """Store JSON text for ``ttl`` seconds; ``near``: in this process's near cache too."""
        if near:  # before the SET, so the near copy expires no later than the Redis entry
            self.near.put(key, raw, ttl, time.monotonic())
        if not self.available or ttl <= 0:
            return False
        try:
            self.client.set(key, raw, ex=ttl)
        except Exception as exc:
            self._trip(exc)
            return False
        return True

    # -- the live policy -------------------------------------------------------------------------
    def setting(self, name: str, default: int) -> int:
        """A published policy value (``ttl_search`` …), re-read at most every ``refresh_seconds``."""
        now = time.monotonic()
        if now - self._policy_read_at >= self.refresh_seconds:
            self._policy_read_at = now
            if self.available:
                try:
                    self._policy = parse_policy_hash(self.client.hgetall(POLICY_KEY))
                except Exception as exc:
                    self._trip(exc)
        return self._policy.get(name, default)

    # -- the query log ---------------------------------------------------------------------------
    def log_query(self, company_id: int, request_json: str, now: float) -> bool:
        """Count one normalized request in the company's query log of this hour (bounded).

        Counted in memory; a background thread writes the counts every ``querylog_flush_seconds``
        (``flush_query_log``). False when the request is not logged: Redis is known to be down,
        the request is oversized, or too many distinct requests wait for the next flush."""
        if not self.available or len(request_json) > MAX_LOGGED_REQUEST or self._closing.is_set():
            return False
        entry = (company_id, hour_of(now), request_json)
        with self._pending_lock:
            if entry not in self._pending and len(self._pending) >= QUERYLOG_PENDING_MAX:
                return False
            self._pending[entry] = self._pending.get(entry, 0) + 1
            if self._flusher is None and not self._closing.is_set():
                self._flusher = threading.Thread(target=self._flush_every, name="querylog-flush", daemon=True)
                self._flusher.start()
        return True

    def flush_query_log(self) -> int:
        """Write the counted requests to Redis in one pipelined round trip; returns how many
        distinct requests were written (0 when Redis is down: those counts are dropped)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if not pending or not self.available:
            return 0
        size = max(self.setting("querylog_max", QUERYLOG_DEFAULTS["querylog_max"]), 1)
        expire = (self.setting("querylog_hours", QUERYLOG_DEFAULTS["querylog_hours"]) + 1) * 3600
        try:
            if self._count_query is None:
                self._count_query = self.client.register_script(COUNT_QUERY_LUA)
            pipe = self.client.pipeline(transaction=False)
            for (company_id, hour, request_json), n in pending.items():
                self._count_query(keys=[querylog_key(company_id, hour)], args=[request_json, size, expire, n],
                                  client=pipe)
            pipe.execute()
        except Exception as exc:
            self._trip(exc)
            return 0
        return len(pending)

    def _flush_every(self) -> None:
        while not self._closing.wait(self.querylog_flush_seconds):
            self.flush_query_log()

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` (SCAN, never KEYS); returns how many."""
        return self.delete_keys(self.client.scan_iter(match=prefix + "*", count=1000))

    def delete_keys(self, keys: Iterable[bytes | str]) -> int:
        deleted = 0
        batch: list[bytes | str] = []
        for key in keys:
            batch.append(key)
            if len(batch) >= 1000:
                deleted += self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += self.client.unlink(*batch)
        return deleted

    def ping(self) -> bool:
        try:
            return bool(self.client is not None and self.client.ping())
        except Exception:
            return False

    def close(self) -> None:
        """Write what the query log and ``set_raw_later`` still hold, stop their threads, close the connection."""
        with self._writes_ready:
            self._closing.set()
            self._writes_ready.notify_all()
        if self._writer is not None:
            self._writer.join(5)
        if self._flusher is not None:
            self._flusher.join(5)
        self.flush_query_log()
        if self.client is not None:
            self.client.close()


class PendingGet:
    """A search answer asked of the near cache and Redis (``Cache.get_raw_begin``), read later."""

    def __init__(self, cache: Cache, key: str, counter: Counter, near_ttl: int, *,
                 answer: tuple[bytes | None, str] | None = None, batch: Batch | None = None, index: int = 0) -> None:
        self.cache, self.key, self.counter, self.near_ttl = cache, key, counter, near_ttl
        self._answer = answer
        self._batch = batch
        self._index = index  # the GET's reply; the PTTL's follows it
        self._counted = False

    def result(self) -> tuple[bytes | None, str]:
        """(stored JSON text, hit | miss | error), as ``Cache.get_raw``; counted once."""
        if self._answer is None:
            self._answer = self._read()
        if not self._counted:
            self._counted = True
            self.counter.labels(self._answer[1]).inc()
        return self._answer

    def _read(self) -> tuple[bytes | None, str]:
        assert self._batch is not None
        try:
            raw, left_ms = self._batch.reply(self._index), int(self._batch.reply(self._index + 1))
        except Exception:  # not sent, or the connection failed (the batch tripped the breaker)
            return None, "error"
        if raw is None:
            return None, "miss"
        if left_ms != -2:  # -2: gone since the GET; -1: Redis keeps it for good
            left = None if left_ms == -1 else left_ms / 1000
            self.cache.near.put(self.key, bytes(raw), self.near_ttl, time.monotonic(), left)
        return bytes(raw), "hit"

    def close(self) -> None:
        """Give up on the answer if it was not read: the connection goes back in a clean state."""
        if self._batch is not None:
            self._batch.close()


def parse_policy_hash(raw: dict[Any, Any]) -> dict[str, int]:
    """The published policy hash as integers; unknown or malformed fields are ignored (pure)."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name not in POLICY_FIELDS:
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if number >= 0:
            out[name] = number
    return out
