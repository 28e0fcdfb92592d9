"""What the Locust users send (``bench/locustfile.py``): pure, so the driver seeds the same documents
the readers read and the tests can look at the mix without starting Locust.

- Words are pseudo-words of a fixed vocabulary; a document is a few hundred of them (about two
  chunks of 800 characters), drawn with Zipf weights so some words are common and most are rare.
- Search is a mix of **repeated** queries (each tenant has ``POPULAR_QUERIES`` popular ones, picked
  with Zipf weights: the head is asked again and again, which is what a cache is for) and **new**
  ones (random words plus a token never seen before: always a cache miss). ``REPEATED_SHARE`` of the
  searches are repeated.
- Readers read the seeded documents ``seed-0000 …`` of their tenant by external id.
- Ingest users send JSON events to ``POST /v1/webhooks/loadtest``, signed with the tenant's secret.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

VOCABULARY = 4000
POPULAR_QUERIES = 50
REPEATED_SHARE = 0.7  # of searches; the rest are new queries (cache misses by construction)
DOC_WORDS = (180, 300)  # ~1,400-2,400 characters: 2-3 chunks of 800 with an overlap of 100
SEED_PREFIX = "seed-"
WEBHOOK_SOURCE = "loadtest"
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class Tenant:
    """A company the load runs as (``opsctl tenant create NAME -o json`` prints these three)."""

    company_id: int
    api_key: str
    webhook_secret: str


def read_tenants(text: str) -> list[Tenant]:
    """The tenants file the driver writes (a JSON list of objects with the fields of ``Tenant``)."""
    items = json.loads(text)
    return [Tenant(int(t["company_id"]), str(t["api_key"]), str(t["webhook_secret"])) for t in items]


@cache
def vocabulary(size: int = VOCABULARY, seed: int = 14) -> tuple[str, ...]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(2, 4)
        words.add("".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return tuple(sorted(words))


def zipf_weights(n: int, exponent: float = 1.0) -> list[float]:
    return [1.0 / (rank**exponent) for rank in range(1, n + 1)]


@dataclass
class Mix:
    """One user's generator of documents and queries (its own ``random.Random``)."""

    rng: random.Random
    words: Sequence[str]
    word_weights: Sequence[float]

    @classmethod
    def make(cls, seed: int | None = None) -> Mix:
        words = vocabulary()
        return cls(random.Random(seed), words, list(itertools.accumulate(zipf_weights(len(words)))))

    def _words(self, n: int) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.word_weights, k=n)

    def document_text(self) -> str:
        words = self._words(self.rng.randint(*DOC_WORDS))
        sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
        return " ".join(sentences)

    def popular_query(self, tenant: Tenant) -> str:
        """One of the tenant's popular queries, Zipf-weighted (rank 1 most often)."""
        rank = self.rng.choices(range(POPULAR_QUERIES), weights=zipf_weights(POPULAR_QUERIES))[0]
        own = random.Random(tenant.company_id * 100_003 + rank)  # the same query for every user of the tenant
        return " ".join(own.choices(self.words[:1000], k=own.randint(2, 4)))

    def new_query(self) -> str:
        """Random words and a token no document holds: a query no cache has answered."""
        return " ".join([*self._words(self.rng.randint(2, 4)), f"q{self.rng.getrandbits(48):x}"])

    def event(self, user: int, n: int) -> bytes:
        """A webhook event body: its own id, a title, the text."""
        body: dict[str, Any] = {"id": f"u{user}-e{n}-{self.rng.getrandbits(32):x}", "type": "note",
                                "title": " ".join(self._words(4)), "text": self.document_text()}
        return json.dumps(body).encode()


def seed_id(i: int) -> str:
    return f"{SEED_PREFIX}{i:04d}"


def seed_documents(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """The documents the driver ingests for every tenant before the run (readers read them)."""
    mix = Mix.make(seed)
    return [{"external_id": seed_id(i), "title": f"seed {i}", "text": mix.document_text()} for i in range(n)]
