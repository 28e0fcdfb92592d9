"""A Message-ID as a person gives it, to the id the core stored the message under (pure).

People copy an id from a mail client, a log or the message itself: bare (``a@x``), in its angle
brackets (``<a@x>``), or as its header has it (``<a@x> (a comment)``, a space inside the brackets,
longer than the core keeps). The parser stores the Message-ID header's first bracketed id, else its
first word, normalised by :func:`core.mail.ids.normalize_id` (no brackets, no whitespace, at most
512 characters: a longer one as its start and a hash of the whole). :func:`asked_id` gives the id a
lookup must use: ``GET /v1/emails/{id}`` and ``opsctl emails show`` both call it, so both find what
the worker stored.
"""

from __future__ import annotations

from core.mail.ids import normalize_id, own_id

# A Message-ID header longer than this (far past RFC 5322's 998 a line) is not an id. And a path must
# reach the app: URL-encoded, a character takes up to 12 bytes (4 UTF-8 bytes, each %XX), so 4,096
# of them are at most 48 KiB, under the request line the HTTP server reads (uvicorn with httptools
# answers a longer one itself: a text/plain 400, not the API's JSON 422).
MAX_ASKED = 4 << 10


def asked_id(given: str) -> str | None:
    """The stored id ``given`` names (as the header's id, when it has a ``<``: a comment after it is
    left out; else the whole of it without its whitespace); None when nothing is left (``<>``, blank)."""
    return own_id(given) if "<" in given else normalize_id(given)
