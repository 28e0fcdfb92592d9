"""What a parsed message is (the contract between core.mail and the mail store)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str          # "application/pdf"
    size: int                  # decoded bytes
    indexed: bool              # text attachments are indexed, binary ones are not


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str            # without angle brackets, whitespace-stripped; a synthetic one when absent
    synthetic_id: bool         # True: derived from the content (stable: re-ingesting is a no-op)
    subject: str | None        # RFC 2047 decoded
    from_: str | None          # decoded, "Name <addr@host>"
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None      # timezone-aware UTC; None when missing or unparseable (noted)
    in_reply_to: str | None    # the first msg-id of In-Reply-To, without brackets
    references: tuple[str, ...]  # References in order, then In-Reply-To if not in it; no duplicates,
                                 # never the message's own id (a self-reference is dropped); in both,
                                 # an id without "@" is ignored and noted (the own id is kept as it is)
    body_text: str             # the readable text: text/plain preferred, HTML converted to text
    index_text: str            # body_text without quoted earlier messages and the signature
    attachments: tuple[Attachment, ...]
    notes: tuple[str, ...]     # what could not be read ("no Message-ID", "unparseable Date: …",
                               # "encrypted part not indexed", "undecodable charset x-foo: replaced")
