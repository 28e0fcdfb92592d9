"""``python -m bench.mail_strip PATH...``: how much smaller quote and signature stripping makes the
index of a real mailbox.

Reads exactly the mail ``opsctl ingest PATH...`` sends, with its code (:func:`opsctl.readers.find_files`
and :mod:`opsctl.mailreaders`): ``.eml`` files, mbox files (split by ``core.mail.mbox``, mboxrd
``>From`` unquoted), Maildir folders (``cur/`` or ``new/``, Maildir++ folders inside, ``tmp/`` and
files that do not look like mail left out); with ``--format email`` every file is one message.
Documents (``.md``, ``.txt``, ``.json(l)``) are not mail and are left out. Each Message-ID counts
once, at its first delivery, as the service stores it; the later deliveries are counted as
duplicates skipped. Every message is run through ``core.mail.parse_message``, and ``body_text`` (the
readable text: what an index without stripping holds) is compared with ``index_text`` (without quoted
earlier messages and the signature: what the service indexes), in text bytes and in chunks of the
service's default size, and how long parsing takes (CPU µs per message). Nothing is stored:
point it at your own mail to see the figures for it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.chunking import chunk_text
from core.config import Settings
from core.errors import ConfigError
from core.mail.message import message_id_of, parse_message
from opsctl.files import FileProblem
from opsctl.mailreaders import messages
from opsctl.readers import Format, Refusal, find_files


def deliveries(path: Path, format: Format = "auto",
               on_refused: Callable[[Refusal], None] = lambda _: None) -> Iterator[bytes]:
    """The raw messages ``opsctl ingest path`` sends, in its order; what it refuses (a message, or a
    whole file) goes to ``on_refused``. ``ConfigError`` as ``opsctl ingest`` (nothing to send there)."""
    found = find_files([path], format)
    if not found.mail:
        raise ConfigError(f"{path}: no mail (.eml files, mbox files or Maildir folders)")
    for mail in found.mail:
        try:
            for message in messages(mail):
                if message.problem is None:
                    yield message.raw
                else:
                    on_refused(Refusal(message.path, message.problem, message.number, message.line))
        except FileProblem as exc:
            on_refused(Refusal(mail.path, exc.reason))


@dataclass
class Sizes:
    messages: int = 0  # distinct Message-IDs
    duplicates: int = 0  # later deliveries of a Message-ID already counted
    replies: int = 0  # messages with In-Reply-To or References
    body_bytes: int = 0
    index_bytes: int = 0
    body_chunks: int = 0
    index_chunks: int = 0
    refused: list[Refusal] = field(default_factory=list)
    per_source: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # messages, body, index bytes
    seen: set[str] = field(default_factory=set, repr=False)
    parse_seconds: float = 0.0  # CPU time in parse_message

    def add(self, raw: bytes, chunk_size: int, overlap: int) -> tuple[int, int] | None:
        """The body and index bytes of a message counted; None for a duplicate delivery."""
        message_id, _ = message_id_of(raw)
        if message_id in self.seen:
            self.duplicates += 1
            return None
        self.seen.add(message_id)
        started = time.process_time()
        parsed = parse_message(raw)
        self.parse_seconds += time.process_time() - started
        body, index = len(parsed.body_text.encode()), len(parsed.index_text.encode())
        self.messages += 1
        self.replies += bool(parsed.references)
        self.body_bytes += body
        self.index_bytes += index
        self.body_chunks += len(chunk_text(parsed.body_text, chunk_size, overlap))
        self.index_chunks += len(chunk_text(parsed.index_text, chunk_size, overlap))
        return body, index


def measure(paths: list[Path], chunk_size: int, overlap: int, format: Format = "auto",
            on_refused: Callable[[Refusal], None] = lambda _: None) -> Sizes:
    """The sizes of the mail under ``paths`` (each a source of its own in ``per_source``)."""
    sizes = Sizes()

    def refused(refusal: Refusal) -> None:
        sizes.refused.append(refusal)
        on_refused(refusal)

    for path in paths:
        n = body = index = 0
        for raw in deliveries(path, format, refused):
            added = sizes.add(raw, chunk_size, overlap)
            if added is not None:
                n, body, index = n + 1, body + added[0], index + added[1]
        sizes.per_source[str(path)] = (n, body, index)
    return sizes


def _saved(stripped: int, full: int) -> str:
    return f"{1 - stripped / full:.0%}" if full else "—"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mail_strip", description=__doc__.splitlines()[0],
                                epilog="example: python -m bench.mail_strip ~/Mail/lists.mbox ~/Maildir")
    p.add_argument("paths", nargs="+", type=Path, help="mbox files, Maildir folders, .eml files or folders of them "
                   "(what opsctl ingest takes as mail)")
    p.add_argument("--format", choices=("auto", "email"), default="auto",
                   help="email: every file is one message (as opsctl ingest --format email)")
    a = p.parse_args(argv)
    size, overlap = (Settings.model_fields[k].default for k in ("chunk_size", "chunk_overlap"))
    try:
        s = measure(a.paths, size, overlap, a.format, lambda r: print(f"refused: {r}", file=sys.stderr))
    except ConfigError as exc:
        print(f"mail_strip: {exc.message}", file=sys.stderr)
        return 2
    if not s.messages:
        print("mail_strip: no message found", file=sys.stderr)
        return 1
    title = (f"quote and signature stripping: {s.messages} messages ({s.replies} replies), "
             f"{s.duplicates} duplicate deliveries skipped, {len(s.refused)} refused")
    t = Table(title=title, show_edge=False)
    for col in ("source", "messages", "body_text bytes", "index_text bytes", "saved"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for source, (n, body, index) in s.per_source.items():
        t.add_row(source, str(n), f"{body:,}", f"{index:,}", _saved(index, body))
    t.add_row("[bold]all[/bold]", str(s.messages), f"{s.body_bytes:,}", f"{s.index_bytes:,}",
              _saved(s.index_bytes, s.body_bytes))
    t.add_row(f"chunks ({size} characters)", "", f"{s.body_chunks:,}", f"{s.index_chunks:,}",
              _saved(s.index_chunks, s.body_chunks))
    console = Console(width=200)
    console.print(t)
    console.print(f"parse_message: {s.parse_seconds / max(s.messages, 1) * 1e6:,.0f} µs of CPU per message "
                  f"({s.messages} messages)", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
