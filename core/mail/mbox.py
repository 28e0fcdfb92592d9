"""mbox (RFC 4155), pure: split one into its messages, and write messages as one (mboxrd quoting).

Both sides use this one piece of code: ``opsctl ingest`` reads mbox files with :func:`split_mbox`
and writes the ``application/mbox`` bodies it sends with :func:`mbox_entry`; ``POST /v1/emails``
splits those bodies with :func:`split_mbox` again. So a message goes through byte-exact:
``split_mbox(lines_of(b"".join(mbox_entry(m) for m in ms)))`` gives back ``ms``.

- A message starts at a ``From_`` line (``From <address> <date>``, the date as ctime writes it:
  month name, time, year; :func:`is_from_line`). A ``From`` line of a body that lacks a date
  (``From here on …``) does not split a message.
- The message is what lies between two such lines, without the blank line the mbox adds after
  each message.
- mboxrd quoting: a line ``>From``, ``>>From`` … loses one ``>`` when read (also mboxo's
  ``>From``); :func:`mbox_entry` adds one to every line ``From ``, ``>From `` … it writes.
- Blank lines before the first ``From_`` line are allowed; anything else there is not an mbox
  (:class:`NotAnMbox`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_BYTES = 10 << 20  # the API's default max_body_bytes: a larger message cannot be sent in one request
FROM_LINE = b"From opsctl Thu Jan  1 00:00:00 1970\n"  # the separator mbox_entry writes (its date is not read)

_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
# From <address> <date>: a ctime-like date (mutt's is_from): a month name, hh:mm, a four-digit year, in any order
_FROM_LINE = re.compile(rb"From [^ \t\r\n]+[ \t]+(?=.*\b" + _MONTH + rb"\b)(?=.*\b\d{1,2}:\d\d\b)(?=.*\b\d{4}\b)"
                        rb"[^\r\n]*\r?\n?")
_ESCAPED_FROM = re.compile(rb">+From ")
_TO_QUOTE = re.compile(rb"^(?=>*From )", re.MULTILINE)  # every line start followed by >*'From '
_BLANK = (b"\n", b"\r\n")


class NotAnMbox(ValueError):
    """Text comes before the first ``From_`` line."""


def is_from_line(line: bytes) -> bool:
    """Whether ``line`` separates two messages of an mbox: ``From <address> <date>``."""
    return line.startswith(b"From ") and _FROM_LINE.fullmatch(line) is not None


@dataclass(frozen=True)
class Part:
    """A message of an mbox, as :func:`split_mbox` finds it: its number and the line of its ``From_``
    line (1-based), the message (``raw`` None when it was over the limit), the mbox bytes it took."""

    number: int
    line: int
    raw: bytes | None
    size: int


def lines_of(data: bytes) -> Iterator[bytes]:
    """``data``'s lines, each with its ``\\n`` (the last one may lack it): lines as :func:`split_mbox`
    counts them (``bytes.splitlines`` would also split at ``\\r``, form feeds …)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start) + 1 or len(data)
        yield data[start:end]
        start = end


def split_mbox(lines: Iterable[bytes], max_bytes: int = MAX_BYTES) -> Iterator[Part]:
    """The messages of an mbox given as its lines (pieces of lines are fine: a piece that does not
    end in a newline is continued by the next one), one at a time.

    A message over ``max_bytes`` is counted but not held (``raw`` None); text before the first
    ``From_`` line raises :class:`NotAnMbox` (after the messages before it: none).
    """
    number = line_no = start = size = kept = 0
    held: list[bytes] | None = []
    at_line_start = True
    last_blank = False

    def finish() -> Part:
        if held is None:
            return Part(number, start, None, size)
        body = held[:-1] if last_blank else held  # the blank line the mbox adds after each message
        return Part(number, start, b"".join(body), size)

    for piece in lines:
        starts_line, at_line_start = at_line_start, piece.endswith(b"\n")
        line_no += starts_line
        if starts_line and is_from_line(piece):
            if number:
                yield finish()
                size = 0
            number, start, held, kept, last_blank = number + 1, line_no, [], 0, False
            size += len(piece)
            continue
        size += len(piece)
        if not number:
            if piece.strip():
                raise NotAnMbox(f"not an mbox: line {line_no} comes before any 'From <address> <date>' line")
            continue
        if starts_line and _ESCAPED_FROM.match(piece):
            piece = piece[1:]
        last_blank = starts_line and piece in _BLANK
        if held is not None:
            kept += len(piece)
            if kept > max_bytes:
                held = None
            else:
                held.append(piece)
    if number:
        yield finish()


_UNQUOTE = re.compile(rb"^>(>*From )", re.MULTILINE)  # mboxrd: one '>' off every line '>+From '


def split_mbox_bytes(data: bytes, max_bytes: int = MAX_BYTES) -> list[Part]:
    """``list(split_mbox(lines_of(data), max_bytes))`` for an mbox held whole (``POST /v1/emails``
    with an mbox body), read at C speed: regular expressions find the ``From_`` lines and unquote
    each message at once, where the line reader runs Python per line."""
    starts = [at for at in _line_starts(data, b"From ") if is_from_line(data[at:_line_end(data, at)])]
    lead = data[:starts[0]] if starts else data
    if lead.strip():
        bad = next(i for i, line in enumerate(lines_of(lead)) if line.strip())
        raise NotAnMbox(f"not an mbox: line {bad + 1} comes before any 'From <address> <date>' line")
    parts = []
    line = lead.count(b"\n") + 1
    for number, start in enumerate(starts, 1):
        body_at = _line_end(data, start)
        end = starts[number] if number < len(starts) else len(data)
        body = data[body_at:end]
        if b">From " in body:
            body = _UNQUOTE.sub(rb"\1", body)
        held = None if len(body) > max_bytes else body[:len(body) - len(_last_blank(body))]
        parts.append(Part(number, line, held, end - (start if number > 1 else 0)))  # the first: with the lead
        line += data.count(b"\n", start, end)
    return parts


def _line_starts(data: bytes, prefix: bytes) -> Iterator[int]:
    """Where the lines of ``data`` beginning with ``prefix`` start (``bytes.find``: no regex tried at each byte)."""
    if data.startswith(prefix):
        yield 0
    at = data.find(b"\n" + prefix)
    while at >= 0:
        yield at + 1
        at = data.find(b"\n" + prefix, at + 1)


def _line_end(data: bytes, start: int) -> int:
    return data.find(b"\n", start) + 1 or len(data)


def _last_blank(body: bytes) -> bytes:
    """The last line of ``body`` when it is blank (the line the mbox adds after each message), else b""."""
    for blank in _BLANK:
        if body.endswith(blank) and (len(body) == len(blank) or body[-len(blank) - 1] == 0x0A):
            return blank
    return b""


def mbox_entry(raw: bytes) -> bytes | None:
    """``raw`` as one message of an mbox: a ``From_`` line, the message with every ``>*From `` line
    quoted once more (mboxrd), the blank line after it. None when no mbox carries it byte-exact:
    an empty message, or one whose last line has no newline (reading would give it one)."""
    if not raw or not raw.endswith(b"\n"):
        return None
    return FROM_LINE + _TO_QUOTE.sub(b">", raw) + b"\n"
