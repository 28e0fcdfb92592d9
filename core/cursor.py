"""Opaque pagination cursors: where a walk stopped, for whom, and for what (pure).

A cursor is base64url (no padding) of a small struct::

    version (1 byte) | kind (1 byte) | company id (8 bytes) | body | check (8 bytes)

``kind`` says what issued it (``LISTING``: ``GET /v1/documents``, ``SEARCH``: ``POST /v1/search``)
and the body is the kind's own (``listing_cursor``, ``search_cursor``). ``check`` is a BLAKE2b
digest of everything before it: an edited or truncated cursor is refused, as is one of another
company or another kind (``CursorRefused``: the API answers 400 ``invalid_cursor``).

A cursor is validated, not secret and not signed: it only names a position in the caller's own
company's data (every query stays scoped by the key's company), so a hand-made one grants
nothing a first page would not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

VERSION = 1
LISTING = 1
SEARCH = 2
KINDS = {LISTING: "GET /v1/documents", SEARCH: "POST /v1/search"}
CHECK_BYTES = 8
HEAD = struct.Struct(">BBq")
FINGERPRINT_BYTES = 16
HIT_BYTES = 8
MAX_SEARCH_DEPTH = 10_000  # the most hits a search's pages give in all: a tier's largest maxK (core.tiers)


def encoded_chars(body_bytes: int) -> int:
    """The length of a cursor whose body holds ``body_bytes`` bytes (base64 without padding)."""
    return (4 * (HEAD.size + body_bytes + CHECK_BYTES) + 2) // 3


MAX_LISTING_CURSOR_CHARS = 4096  # a 512-character id of 4-byte characters: ~2.8 kB
# a walk at its deepest: a key per hit given (100 hits: ~1.1 kB; 10,000: ~107 kB, in a POST body)
MAX_SEARCH_CURSOR_CHARS = encoded_chars(FINGERPRINT_BYTES + MAX_SEARCH_DEPTH * HIT_BYTES)
MAX_CURSOR_CHARS = {LISTING: MAX_LISTING_CURSOR_CHARS, SEARCH: MAX_SEARCH_CURSOR_CHARS}


class CursorRefused(ValueError):
    """The cursor is not one this API issued for this request (the message says why)."""


def _check(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=CHECK_BYTES, person=b"opsctl-cursor").digest()


def encode(kind: int, company_id: int, body: bytes) -> str:
    raw = HEAD.pack(VERSION, kind, company_id) + body
    return base64.urlsafe_b64encode(raw + _check(raw)).rstrip(b"=").decode("ascii")


def decode(token: str, kind: int, company_id: int) -> bytes:
    """The body of ``token``, a cursor of ``kind`` issued to ``company_id``; else ``CursorRefused``."""
    if len(token) > MAX_CURSOR_CHARS[kind]:
        raise CursorRefused(f"cursor: longer than {MAX_CURSOR_CHARS[kind]} characters: not one this API issued")
    try:
        raw = base64.b64decode(token.encode("ascii") + b"=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise CursorRefused("cursor: not base64url: pass next_cursor as it was answered") from None
    if len(raw) < HEAD.size + CHECK_BYTES or _check(raw[:-CHECK_BYTES]) != raw[-CHECK_BYTES:]:
        raise CursorRefused("cursor: damaged or edited: pass next_cursor as it was answered")
    version, found_kind, found_company = HEAD.unpack_from(raw)
    if version != VERSION:
        raise CursorRefused(f"cursor: version {version} is not one this API reads: start the walk again")
    if found_kind != kind:
        raise CursorRefused(f"cursor: issued by {KINDS.get(found_kind, 'another operation')}, "
                            f"not for {KINDS.get(kind, 'this one')}")
    if found_company != company_id:
        raise CursorRefused("cursor: issued to another company's key")
    return raw[HEAD.size:-CHECK_BYTES]


# -- the listing: the last external id given ------------------------------------------------------------------

def listing_cursor(company_id: int, last_external_id: str) -> str:
    return encode(LISTING, company_id, last_external_id.encode("utf-8"))


def listing_position(token: str, company_id: int) -> str:
    """The external id after which the listing goes on."""
    body = decode(token, LISTING, company_id)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise CursorRefused("cursor: damaged or edited: pass next_cursor as it was answered") from None


# -- a search: its fingerprint and the hits given ----------------------------------------------------------------

@dataclass(frozen=True)
class SearchPosition:
    """What a later page of a search knows: the query's fingerprint and the hits already answered
    (each as ``hit_key``)."""

    fingerprint: bytes
    keys: tuple[bytes, ...]

    @property
    def count(self) -> int:
        return len(self.keys)

    @property
    def given(self) -> frozenset[bytes]:
        return frozenset(self.keys)


def hit_key(identity: str) -> bytes:
    """A hit's identity (``core.search.retrieve.hit_identity``) in 8 bytes (collisions: 2^-64 per pair)."""
    return hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=HIT_BYTES).digest()


def search_cursor(company_id: int, fingerprint: bytes, given: Iterable[bytes]) -> str:
    keys = list(given)
    assert len(fingerprint) == FINGERPRINT_BYTES and all(len(k) == HIT_BYTES for k in keys)
    return encode(SEARCH, company_id, fingerprint + b"".join(keys))


def search_position(token: str, company_id: int, fingerprint: bytes) -> SearchPosition:
    """The hits a search's earlier pages gave; ``CursorRefused`` when the cursor is of another query."""
    body = decode(token, SEARCH, company_id)
    if len(body) < FINGERPRINT_BYTES or (len(body) - FINGERPRINT_BYTES) % HIT_BYTES:
        raise CursorRefused("cursor: damaged or edited: pass next_cursor as it was answered")
    if body[:FINGERPRINT_BYTES] != fingerprint:
        raise CursorRefused("cursor: issued for another search (query, mode, filters and group_by must stay "
                            "the same from page to page; k may change)")
    return SearchPosition(fingerprint, tuple(body[i:i + HIT_BYTES] for i in range(FINGERPRINT_BYTES, len(body),
                                                                                   HIT_BYTES)))
