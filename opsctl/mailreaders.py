"""Mail on disk for ``opsctl ingest``: which files hold mail, and their messages, read one at a time.

Mail comes in three shapes (:func:`mail_kind` tells which a file is, by its place, name and first
line; :mod:`opsctl.readers` walks the paths named and asks it):

- a **message file**: ``.eml``, or any file in a Maildir's ``cur/`` or ``new/`` (names like
  ``1354585346.000260:2,S``). A Maildir is a directory holding ``cur/`` and ``new/``; Maildir++
  folders (``.Sent/``, ``.Archive.2024/``) are Maildirs inside it. A Maildir's ``tmp/`` holds
  deliveries in progress and its dotfiles are not messages: both are skipped. A message file must
  look like mail (its first line a header field or a ``From`` line), so a stray file is refused
  by name rather than stored as a message; ``--format email`` (kind ``email``) sends any file as
  it is.
- an **mbox**: ``.mbox``/``.mbx``, or a file of any name whose first line is an mbox ``From_``
  line (``From <address> <date>``); its messages are split by :mod:`core.mail.mbox` (the code the
  API splits ``application/mbox`` bodies with: ``From_`` lines, the trailing blank line, mboxrd
  ``>From`` unquoting).
- anything else is not mail.

Memory holds one message at a time, whatever the file's size: an mbox is read in lines of at most
64 KiB and split as it is read (``core.mail.mbox.split_mbox``, pure, over any iterable of lines), and a
message over ``max_bytes`` is counted, not held, then refused by its place (message number and
line). Problems with a whole file (not a regular file, unreadable, not an mbox) are ``FileProblem``;
problems with one message are its ``problem``: the other messages still go.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Literal

from core.mail.mbox import MAX_BYTES as MESSAGE_MAX_BYTES
from core.mail.mbox import NotAnMbox, is_from_line, split_mbox
from opsctl.files import FileProblem

MailKind = Literal["message", "email", "mbox"]  # a file that must look like mail, any file sent as is, an mbox

LINE_MAX = 64 << 10  # an mbox is read in pieces of at most this: a file without newlines cannot fill memory
MAIL_SUFFIXES: dict[str, MailKind] = {".eml": "message", ".mbox": "mbox", ".mbx": "mbox"}
MAILDIR_BOXES = ("cur", "new")

_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")  # a field name (printable ASCII but ':') and its colon


def looks_like_message(head: bytes) -> bool:
    """Whether a file starting with ``head`` looks like a mail message: its first line is a header
    field (``Received: …``, ``Message-ID: …``) or an mbox-style ``From`` line (pure)."""
    return head.startswith(b"From ") or _HEADER_LINE.match(head) is not None


def is_maildir(directory: Path) -> bool:
    return all((directory / box).is_dir() for box in MAILDIR_BOXES)


def maildir_place(path: Path) -> Literal["box", "tmp"] | None:
    """Where a file sits in a Maildir: in ``cur/`` or ``new/`` (``box``), in ``tmp/``, or in none."""
    parent = path.parent
    if parent.name not in (*MAILDIR_BOXES, "tmp") or not is_maildir(parent.parent):
        return None
    return "tmp" if parent.name == "tmp" else "box"


def starts_like_mbox(path: Path) -> bool:
    """Whether ``path`` is a regular file whose first line is an mbox ``From_`` line."""
    try:
        with open_regular(path) as fh:
            return is_from_line(fh.readline(1024))
    except (FileProblem, OSError):
        return False


def mail_kind(path: Path) -> MailKind | None:
    """The kind of mail ``path`` holds (see the module's docstring), or None: not mail."""
    place = maildir_place(path)
    if place is not None:
        return "message" if place == "box" and not path.name.startswith(".") else None
    kind = MAIL_SUFFIXES.get(path.suffix.lower())
    if kind is None and starts_like_mbox(path):
        return "mbox"
    return kind


@dataclass(frozen=True)
class MailFile:
    """A file of mail to send: its kind and its size in bytes (what a progress bar counts)."""

    path: Path
    kind: MailKind
    size: int

    @classmethod
    def of(cls, path: Path, kind: MailKind) -> MailFile:
        try:
            size = path.stat().st_size if path.is_file() else 0
        except OSError:
            size = 0
        return cls(path, kind, size)


@dataclass(frozen=True)
class Message:
    """One message as the file holds it. ``problem``: why it is not sent (``raw`` is then empty).
    ``number`` and ``line``: its place in an mbox (1-based; its ``From_`` line), None for a file that is
    one message. ``size``: the bytes of the file it accounts for."""

    path: Path
    raw: bytes
    size: int
    number: int | None = None
    line: int | None = None
    problem: str | None = None


def too_large(max_bytes: int) -> str:
    return (f"larger than {max_bytes / (1 << 20):g} MiB, the most one request carries (the API's max_body_bytes): "
            "not sent")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, if it is a regular file (a FIFO is refused, never opened)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FileProblem("not a regular file")
        return path.open("rb")
    except FileNotFoundError:
        raise FileProblem("no such file") from None
    except OSError as exc:
        raise FileProblem(f"unreadable: {exc.strerror or exc}") from exc


def messages(mail: MailFile, max_bytes: int = MESSAGE_MAX_BYTES) -> Iterator[Message]:
    """The messages of a mail file, one at a time; ``FileProblem`` when the file cannot be read (after
    the messages read before, for an mbox that fails midway)."""
    with open_regular(mail.path) as fh:
        if mail.kind != "mbox":
            yield _one_message(mail, fh, max_bytes)
            return
        read = 0
        try:
            for part in split_mbox(iter(partial(fh.readline, LINE_MAX), b""), max_bytes):
                read = part.number
                if part.raw is None:
                    problem: str | None = too_large(max_bytes)
                elif not part.raw.strip():
                    problem = "an empty message"
                else:
                    problem = None
                yield Message(mail.path, part.raw or b"", part.size, part.number, part.line, problem)
        except NotAnMbox as exc:
            raise FileProblem(str(exc)) from None
        except OSError as exc:
            raise FileProblem(f"unreadable after message {read}: {exc.strerror or exc}") from exc


def _one_message(mail: MailFile, fh: BinaryIO, max_bytes: int) -> Message:
    try:
        size = os.fstat(fh.fileno()).st_size
        raw = b"" if size > max_bytes else fh.read(max_bytes + 1)
    except OSError as exc:
        raise FileProblem(f"unreadable: {exc.strerror or exc}") from exc
    size = max(size, len(raw))
    if size > max_bytes or len(raw) > max_bytes:
        return Message(mail.path, b"", size, problem=too_large(max_bytes))
    if not raw.strip():
        return Message(mail.path, b"", size, problem="an empty file: no message")
    if mail.kind == "message" and not looks_like_message(raw[:1024]):
        return Message(mail.path, b"", size, problem="does not look like a mail message (its first line is "
                       "neither a header field nor a 'From' line); --format email sends it as it is")
    return Message(mail.path, raw, size)
