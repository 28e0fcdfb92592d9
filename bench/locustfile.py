"""Locust users for the core: ingest through signed webhooks, search, read documents.

Run by ``make loadtest`` (``python -m bench.loadtest``, which creates the tenants, seeds their documents
and writes the CSV and HTML report); by hand::

    LOADTEST_TENANTS=tenants.json locust -f bench/locustfile.py --headless --host http://127.0.0.1:8080

Three kinds of users, weighted 1 : 3 : 2 (each user is one of them, bound to one tenant):

- ``IngestUser``: ``POST /v1/webhooks/loadtest``, a JSON event signed with the tenant's webhook secret
  (``X-Opsctl-Signature``), one new document each;
- ``SearchUser``: ``POST /v1/search`` (hybrid, k 10), 70 % repeated queries (the tenant's 50 popular
  ones, Zipf-weighted) and 30 % new ones (``bench/loadmix.py``);
- ``ReaderUser``: ``GET /v1/documents/{external_id}`` of the tenant's seeded documents.

Each waits ``LOADTEST_THINK`` seconds on average between requests (0.5x to 1.5x; default 5 s: the
seeds' 50-100 concurrent users make 10-20 requests/s). The load follows ``LoadShape``: ``step``
(``LOADTEST_STEPS`` equal steps up to ``LOADTEST_USERS``) or ``ramp`` (a straight line up to it), for
``LOADTEST_SECONDS`` in all, then the run ends.

Request names in the CSV (one row each): ``webhook``, ``search repeated``, ``search new``, ``document``.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: bench.loadmix, core.tenants

from bench.loadmix import WEBHOOK_SOURCE, Mix, Tenant, read_tenants, seed_id
from core.tenants import sign

TENANTS = read_tenants(Path(os.environ["LOADTEST_TENANTS"]).read_text()) if os.environ.get("LOADTEST_TENANTS") \
    else []
SEED_DOCS = int(os.environ.get("LOADTEST_SEED_DOCS", "100"))
THINK = float(os.environ.get("LOADTEST_THINK", "5"))
_users = itertools.count()


class CoreUser(FastHttpUser):
    abstract = True
    wait_time = between(0.5 * THINK, 1.5 * THINK)

    def on_start(self) -> None:
        if not TENANTS:
            raise RuntimeError("LOADTEST_TENANTS names no tenants file (see bench/loadtest.py)")
        self.number = next(_users)
        self.tenant: Tenant = TENANTS[self.number % len(TENANTS)]
        self.mix = Mix.make()
        self.auth = {"Authorization": f"Bearer {self.tenant.api_key}"}

    def check(self, response: Any, status: int, field: str | None = None) -> None:
        if response.status_code != status:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
        elif field is not None and field not in response.json():
            response.failure(f"no {field!r} in the answer")
        else:
            response.success()


class IngestUser(CoreUser):
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.sent = itertools.count()

    @task
    def webhook(self) -> None:
        body = self.mix.event(self.number, next(self.sent))
        headers = {"X-Opsctl-Company": str(self.tenant.company_id), "Content-Type": "application/json",
                   "X-Opsctl-Signature": sign(self.tenant.webhook_secret, int(time.time()), body)}
        with self.client.post(f"/v1/webhooks/{WEBHOOK_SOURCE}", data=body, headers=headers, name="webhook",
                              catch_response=True) as response:
            self.check(response, 202, "job_ids")


class SearchUser(CoreUser):
    weight = 3

    def _search(self, query: str, name: str) -> None:
        with self.client.post("/v1/search", json={"query": query, "k": 10}, headers=self.auth, name=name,
                              catch_response=True) as response:
            self.check(response, 200, "results")

    @task(7)
    def repeated(self) -> None:
        self._search(self.mix.popular_query(self.tenant), "search repeated")

    @task(3)
    def new(self) -> None:
        self._search(self.mix.new_query(), "search new")


class ReaderUser(CoreUser):
    weight = 2

    @task
    def document(self) -> None:
        external_id = seed_id(self.mix.rng.randrange(SEED_DOCS))
        with self.client.get(f"/v1/documents/{external_id}", headers=self.auth, name="document",
                             catch_response=True) as response:
            self.check(response, 200, "external_id")


class LoadShape(LoadTestShape):
    """``step`` or ``ramp`` (``LOADTEST_SHAPE``) up to ``LOADTEST_USERS`` over ``LOADTEST_SECONDS``."""

    kind = os.environ.get("LOADTEST_SHAPE", "step")
    users = int(os.environ.get("LOADTEST_USERS", "50"))
    steps = int(os.environ.get("LOADTEST_STEPS", "5"))
    seconds = float(os.environ.get("LOADTEST_SECONDS", "120"))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.seconds:
            return None
        if self.kind == "ramp":
            wanted = max(1, math.ceil(self.users * t / self.seconds))
        else:
            step = min(self.steps, int(t // (self.seconds / self.steps)) + 1)
            wanted = math.ceil(self.users * step / self.steps)
        return wanted, float(max(wanted, 1))
