"""Content negotiation (RFC 9110 §12): which coding and which media type a request accepts (pure).

``choose_encoding(accept_encoding, offered)`` picks the response's content coding:

- no ``Accept-Encoding``: none (identity); a client that does not ask gets no compression;
- each coding's weight is its own ``q``, else the ``*`` entry's, else 0 (not acceptable);
  ``x-gzip`` is ``gzip``; an element whose ``q`` is malformed is ignored;
- the heaviest acceptable coding is sent, unless ``identity`` is listed with a greater weight
  (unlisted, identity is acceptable but the last choice); among codings of the same weight the
  first in ``offered`` (the server's preference) wins; a weight of 0 (``zstd;q=0``) refuses.

``prefers(accept, offers)`` picks a media type the same way from ``Accept`` (``type/*``,
``*/*``; the more specific range sets the weight): the first offer when nothing is said.
"""

from __future__ import annotations

from collections.abc import Sequence

ALIASES = {"x-gzip": "gzip"}


def weights(header: str) -> list[tuple[str, float]]:
    """The elements of a comma-separated header with their ``q`` (lower case; malformed ``q`` dropped)."""
    found = []
    for element in header.split(","):
        name, *params = (part.strip() for part in element.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:
                    q = -1.0
        if q >= 0:
            found.append((name.lower(), q))
    return found


def choose_encoding(accept_encoding: str | None, offered: Sequence[str]) -> str | None:
    """The coding of ``offered`` to send (None: identity, uncompressed); see the module docstring."""
    if not accept_encoding or not offered:
        return None
    given: dict[str, float] = {}
    for name, q in weights(accept_encoding):
        name = ALIASES.get(name, name)
        given[name] = max(q, given.get(name, 0.0))
    star = given.get("*")
    identity = given.get("identity", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = given.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best if best is not None and best_q >= identity else None


def prefers(accept: str | None, offers: Sequence[str]) -> str:
    """The media type of ``offers`` that ``Accept`` weighs most (the first offer on a tie, or when
    it accepts none of them: a representation is sent anyway)."""
    if not accept:
        return offers[0]
    ranges = weights(accept)
    best, best_q = offers[0], -1.0
    for offer in offers:
        kind = offer.split("/")[0]
        q, specificity = 0.0, -1
        for media, weight in ranges:
            level = 2 if media == offer else 1 if media == f"{kind}/*" else 0 if media == "*/*" else -1
            if level > specificity:
                q, specificity = weight, level
        if q > best_q:
            best, best_q = offer, q
    return best if best_q > 0 else offers[0]
