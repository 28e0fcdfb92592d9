"""``python -m bench.mail_strip``: reads exactly what ``opsctl ingest`` reads (the same reader code:
Maildirs with one box, Maildir++ folders, mboxrd unquoting, tmp/ and stray files skipped), counts each
Message-ID once (its first delivery) and says how many duplicate deliveries it skipped. Small mailboxes
built in temporary directories; no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mail_strip import main, measure
from core.mail.message import parse_message
from tests.test_ingest_mail_readers import FROM, eml, write

REPLY = eml("list-2@x", "Re: first", "> the start\n\nagreed\n\n-- \nBob\nBob's signature", "In-Reply-To: <list-1@x>\n")
MBOX = FROM + eml("list-1@x", "first", "the start\n>From the archive, quoted once") + b"\n" + FROM + REPLY + b"\n"


def mailboxes(root: Path) -> Path:
    return write(root, {
        "lkml/cur/1382298587.000001.mbox:2,": eml("c1@x"),  # no new/: git dropped it
        "lkml/cur/1382298588.000002.mbox:2,": eml("c2@x", "Re: hello", "> body text\n\nyes",
                                                   "In-Reply-To: <c1@x>\n"),
        "lkml/.Sent/cur/1382298589.000003.host:2,S": eml("sent@x"),  # Maildir++, cur/ only too
        "lkml/.Sent/cur/1382298590.000004.host:2,S": eml("c1@x"),  # a second delivery of c1@x
        "lkml/tmp/1382298591.000005.host": eml("half-delivered@x"),  # being delivered: not read
        "lkml/dovecot-uidlist": "3 V1382298587 N3\n",  # not mail
        "lists/archive.mbox": MBOX,
        "lists/again.mbox": FROM + REPLY + b"\n",  # list-2@x once more (read first: files go in name order)
        "lists/notes.md": "# not mail: a document, which mail_strip leaves out",
    })


def test_it_reads_what_opsctl_ingest_reads_and_counts_each_message_id_once(tmp_path: Path) -> None:
    root = mailboxes(tmp_path)
    sizes = measure([root / "lkml", root / "lists"], 800, 100)
    assert (sizes.messages, sizes.duplicates, sizes.replies) == (5, 2, 2)
    assert sizes.per_source == {
        str(root / "lkml"): (3, *bodies(eml("c1@x"), eml("c2@x", "Re: hello", "> body text\n\nyes",
                                                          "In-Reply-To: <c1@x>\n"), eml("sent@x"))),
        str(root / "lists"): (2, *bodies(REPLY, eml("list-1@x", "first", "the start\nFrom the archive, quoted once")))}
    assert 0 < sizes.index_bytes < sizes.body_bytes
    assert sizes.refused == []


def bodies(*raws: bytes) -> tuple[int, int]:
    parsed = [parse_message(raw) for raw in raws]
    return sum(len(p.body_text.encode()) for p in parsed), sum(len(p.index_text.encode()) for p in parsed)


def test_a_message_refused_by_ingest_is_refused_here_and_the_rest_measured(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path, {"box/new/1.host": eml("n@x"), "box/new/2.host": b"%PDF-1.7\n", "box/new/3.host": b""})
    assert main([str(root / "box")]) == 0
    out, err = capsys.readouterr()
    assert f"{root / 'box' / 'new' / '2.host'}: does not look like a mail message" in err
    assert f"{root / 'box' / 'new' / '3.host'}: an empty file: no message" in err
    assert "1 messages (0 replies), 0 duplicate deliveries skipped, 2 refused" in out


@pytest.mark.parametrize(("files", "named", "error"), [
    ({"d/notes.md": "# a document"}, "d", "d: no mail (.eml files, mbox files or Maildir folders)"),
    ({"d/scan.pdf": b"%PDF"}, "d", "d: no .txt, .md, .json, .jsonl or .eml file, mbox or Maildir"),
    ({}, "gone", "gone: no such file or directory"),
])
def test_nothing_to_measure_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             files: dict[str, bytes | str], named: str, error: str) -> None:
    write(tmp_path, files)
    code = main([str(tmp_path / named)])
    assert (code, capsys.readouterr().err.count(error)) == (2, 1)
