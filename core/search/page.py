"""A search's pages and the fields of its hits (pure).

Pages. A ranked answer has no stable row order to keyset on: scores are relative to the candidates
read (min-max and z-score fusion scale each list) and any ingest reranks. So a later page is the
ranking read again, without the hits already given:

- the cursor (``core.cursor.search_cursor``) carries the query's ``fingerprint`` (the request but
  ``k``, ``cursor`` and ``fields``: another query is a 400) and a key per hit given so far;
- page ``p`` reads the top ``given + k + 1`` of the ranking as it is now and answers the first
  ``k`` not given (``page_of``): no hit is ever answered twice, whatever was ingested meanwhile;
  a hit that rose above those already given (new data) comes on the next page instead of being
  lost, one that fell below the depth is not answered;
- depth: ``given + k`` never passes ``depth`` (the smaller of the setting ``search_max_k`` and the
  tier's ``max_k``: the most hits one request could ask for); there, ``next_cursor`` is null.

A hit's identity (``hit_identity``): its document's external id when hits are per document (an
update, which writes a new document id, is still the hit given), its thread when grouped by
thread, its chunk id when hits are chunks.

Fields. ``fields=external_id,score`` answers only those keys of each hit (``project``); an unknown
name is refused with the known ones listed (``UnknownField``). The retrieval reads chunk texts
from the database only when ``text`` is among them (``wants_text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.cursor import SearchPosition, hit_key, search_cursor

HIT_FIELDS = ("document_id", "external_id", "chunk_id", "text", "score", "thread_id", "matched_messages")
FIELDS_PATTERN = "^({0})(,({0}))*$".format("|".join(HIT_FIELDS))


class UnknownField(ValueError):
    """``fields`` names something a hit does not have."""


def parse_fields(value: str | None) -> tuple[str, ...] | None:
    """The hit fields ``fields=`` asks for, in the order of ``HIT_FIELDS`` (None: every one)."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    unknown = [name for name in names if name not in HIT_FIELDS]
    if unknown or not names:
        shown = ", ".join(repr(n) for n in unknown[:5])
        raise UnknownField(f"fields: unknown {shown}; known: {', '.join(HIT_FIELDS)} (comma-separated)")
    return tuple(name for name in HIT_FIELDS if name in names)


def wants_text(fields: tuple[str, ...] | None) -> bool:
    return fields is None or "text" in fields


def project(hit: dict[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """``hit`` with only ``fields`` (those it has: ``thread_id`` is on mail only)."""
    return hit if fields is None else {name: hit[name] for name in fields if name in hit}


def hit_identity(hit: dict[str, Any], grouped: bool, per_document: bool) -> str:
    """What makes two hits of a search's pages the same hit (module docstring)."""
    if grouped and hit.get("thread_id") is not None:
        return f"thread:{hit['thread_id']}"
    if grouped or per_document:
        return "document:" + str(hit["external_id"])
    return f"chunk:{hit['chunk_id']}"


@dataclass(frozen=True)
class Paging:
    """One page's request: ``k`` hits after ``position`` (None: the first page), ``depth`` at most in all."""

    k: int
    depth: int
    position: SearchPosition | None = None

    @property
    def given(self) -> int:
        return 0 if self.position is None else self.position.count

    @property
    def size(self) -> int:
        """Hits this page answers at most (0: the walk is at its depth)."""
        return max(0, min(self.k, self.depth - self.given))

    @property
    def read(self) -> int:
        """Hits of the ranking to read: those given, this page's and one more (is there a next page?)."""
        return self.given + self.size + 1


def page_of(ranked: Sequence[dict[str, Any]], paging: Paging, company_id: int, fingerprint: bytes,
            grouped: bool, per_document: bool,
            fields: tuple[str, ...] | None) -> tuple[list[dict[str, Any]], str | None]:
    """This page's hits (projected to ``fields``) from the ranking read, best first, and the cursor
    of the next page when the ranking holds more (None: exhausted; ``next_cursor`` says whether the
    depth allows another page)."""
    given = paging.position.given if paging.position is not None else frozenset()
    fresh = [(hit, key) for hit in ranked
             if (key := hit_key(hit_identity(hit, grouped, per_document))) not in given]
    page = fresh[:paging.size]
    cursor = None
    if len(fresh) > len(page):
        before = [] if paging.position is None else list(paging.position.keys)
        cursor = search_cursor(company_id, fingerprint, [*before, *(key for _, key in page)])
    return [project(hit, fields) for hit, _ in page], cursor


def next_cursor(paging: Paging, more: str | None) -> str | None:
    """The ``next_cursor`` answered: the page's cursor (``page_of``) while the walk is short of its depth."""
    return more if paging.given + paging.size < paging.depth else None
