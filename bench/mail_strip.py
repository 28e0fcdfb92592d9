"""``python -m bench.mail_strip PATH...``: how much smaller quote and signature stripping makes the
index of a real mailbox.

Reads mbox files, Maildir folders and single messages (``.eml`` or any other file), runs every
message through ``core.mail.parse_message`` and compares ``body_text`` (the readable text: what an
index without stripping holds) with ``index_text`` (without quoted earlier messages and the
signature: what the service indexes), in text bytes and in chunks of the service's default size,
and how long parsing takes (CPU µs per message). Nothing is stored: point it at your own mail to
see the figures for it, or at the synthetic list (``python -m bench.mailcorpus --messages 5000
--format mbox /tmp/list.mbox``).
"""

from __future__ import annotations

import argparse
import mailbox
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.chunking import chunk_text
from core.config import Settings
from core.mail.message import parse_message


def messages_in(path: Path) -> Iterator[bytes]:
    """Every message under ``path``: a Maildir (``cur/``, ``new/``), a directory of files, an
    mbox (``From `` separated) or one message."""
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            box = mailbox.Maildir(path, factory=None, create=False)
            yield from (box.get_bytes(key) for key in sorted(box.iterkeys()))
            return
        for child in sorted(path.iterdir()):
            yield from messages_in(child)
        return
    head = path.read_bytes()[:5]
    if head == b"From ":
        mbox = mailbox.mbox(path, factory=None, create=False)
        yield from (mbox.get_bytes(key) for key in mbox.iterkeys())
    else:
        yield path.read_bytes()


@dataclass
class Sizes:
    messages: int = 0
    replies: int = 0  # messages with In-Reply-To or References
    body_bytes: int = 0
    index_bytes: int = 0
    body_chunks: int = 0
    index_chunks: int = 0
    per_source: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # messages, body, index bytes
    parse_seconds: float = 0.0  # CPU time in parse_message

    def add(self, raw: bytes, chunk_size: int, overlap: int) -> tuple[int, int]:
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


def measure(paths: list[Path], chunk_size: int, overlap: int) -> Sizes:
    sizes = Sizes()
    for path in paths:
        n = body = index = 0
        for raw in messages_in(path):
            b, i = sizes.add(raw, chunk_size, overlap)
            n, body, index = n + 1, body + b, index + i
        sizes.per_source[str(path)] = (n, body, index)
    return sizes


def _saved(stripped: int, full: int) -> str:
    return f"{1 - stripped / full:.0%}" if full else "—"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mail_strip", description=__doc__.splitlines()[0],
                                epilog="example: python -m bench.mail_strip ~/Mail/lists.mbox ~/Maildir")
    p.add_argument("paths", nargs="+", type=Path, help="mbox files, Maildir folders, .eml files or folders of them")
    a = p.parse_args(argv)
    missing = [str(x) for x in a.paths if not x.exists()]
    if missing:
        p.error(f"no such file or folder: {', '.join(missing)}")
    size, overlap = (Settings.model_fields[k].default for k in ("chunk_size", "chunk_overlap"))
    s = measure(a.paths, size, overlap)
    if not s.messages:
        print("mail_strip: no message found", file=sys.stderr)
        return 1
    t = Table(title=f"quote and signature stripping: {s.messages} messages ({s.replies} replies)", show_edge=False)
    for col in ("source", "messages", "body_text bytes", "index_text bytes", "saved"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for source, (n, body, index) in s.per_source.items():
        t.add_row(source, str(n), f"{body:,}", f"{index:,}", _saved(index, body))
    t.add_row("[bold]all[/bold]", str(s.messages), f"{s.body_bytes:,}", f"{s.index_bytes:,}",
              _saved(s.index_bytes, s.body_bytes))
    t.add_row(f"chunks ({size} characters)", "", f"{s.body_chunks:,}", f"{s.index_chunks:,}",
              _saved(s.index_chunks, s.body_chunks))
    console = Console()
    console.print(t)
    console.print(f"parse_message: {s.parse_seconds / s.messages * 1e6:,.0f} µs of CPU per message "
                  f"({s.messages} messages)", highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
