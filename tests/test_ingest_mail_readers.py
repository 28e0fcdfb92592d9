"""Mail on disk for ``opsctl ingest``: which files are mail (``.eml``, mbox by suffix or by content, Maildir
with Maildir++ folders, ``--format email``), the messages of each as the bytes sent, mbox ``>From``
unescaping, refusals by file and by message, mixed directories, and a 50 MB mbox read with bounded memory.
Real files in temporary directories; no server."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from core.errors import ConfigError
from opsctl.files import FileProblem
from opsctl.mailreaders import MailFile, Message, looks_like_message, messages
from opsctl.readers import find_files, kind_of, read_files

FROM = b"From alice@example.com Mon Jan  5 09:00:00 2026\n"


def n(*pieces: bytes) -> int:
    """The bytes of ``pieces``: what a message accounts for in its file."""
    return sum(map(len, pieces))


def eml(message_id: str, subject: str = "hello", body: str = "body text", extra: str = "") -> bytes:
    return (f"Message-ID: <{message_id}>\nFrom: Alice <alice@example.com>\nTo: bob@example.com\n"
            f"Subject: {subject}\nDate: Mon, 05 Jan 2026 09:00:00 +0000\n{extra}\n{body}\n").encode()


def write(root: Path, files: dict[str, bytes | str]) -> Path:
    """``files`` (relative path → content) under ``root``; a name ending in ``/`` is an empty directory."""
    for name, content in files.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


@pytest.mark.parametrize(("head", "mail"), [
    (b"Message-ID: <a@x>\n", True),
    (b"Return-Path: <a@x>\r\nReceived: from x\r\n", True),
    (b"X-Mozilla-Status: 0001\n", True),
    (b"From - Mon Jan 01 00:00:00 2001\n", True),
    (b"%PDF-1.7\n", False),
    (b"# Notes\n\nSubject: not a header line\n", False),
    (b"\x89PNG\r\n", False),
    (b"no colon on this line\n", False),
    (b": empty field name\n", False),
])
def test_a_message_file_must_look_like_mail(head: bytes, mail: bool) -> None:
    assert looks_like_message(head) is mail


MBOX = (FROM + eml("one@x", "first") + b"\n"
        + b"From bob@example.com Mon Jan  5 10:00:00 2026\n"
        + eml("two@x", "Re: first", ">From the archive\n>>From deeper\nFrom here on, no date",
              "In-Reply-To: <one@x>\n") + b"\n"
        + FROM + eml("three@x", "third") + b"\n")


def read_all(path: Path, kind: str = "mbox", max_bytes: int = 10 << 20) -> list[Message]:
    return list(messages(MailFile.of(path, kind), max_bytes))  # type: ignore[arg-type]


def test_an_mbox_file_gives_its_messages_unescaped_with_their_place(tmp_path: Path) -> None:
    path = tmp_path / "list.mbox"
    path.write_bytes(MBOX)
    got = read_all(path)
    assert [(m.number, m.line, m.problem) for m in got] == [(1, 1, None), (2, 10, None), (3, 22, None)]
    assert got[0].raw == eml("one@x", "first")
    assert got[1].raw == eml("two@x", "Re: first", "From the archive\n>From deeper\nFrom here on, no date",
                             "In-Reply-To: <one@x>\n")
    assert sum(m.size for m in got) == len(MBOX)


def test_a_file_that_is_one_message(tmp_path: Path) -> None:
    latin1 = eml("cafe@x", "caf\xe9", "d\xe9j\xe0 vu").decode().encode("latin-1")  # 8-bit, not UTF-8
    write(tmp_path, {"latin1.eml": latin1, "empty.eml": b"", "notes.eml": b"# not mail\n", "scan.pdf": b"%PDF-1.7\n"})
    (one,) = read_all(tmp_path / "latin1.eml", "message")
    assert one == Message(tmp_path / "latin1.eml", latin1, len(latin1))  # invalid UTF-8 goes as it is
    (empty,) = read_all(tmp_path / "empty.eml", "message")
    assert empty.problem == "an empty file: no message" and empty.raw == b""
    (notes,) = read_all(tmp_path / "notes.eml", "message")
    assert notes.problem and notes.problem.startswith("does not look like a mail message")
    (pdf,) = read_all(tmp_path / "scan.pdf", "email")  # --format email: any file, as it is
    assert pdf.raw == b"%PDF-1.7\n" and pdf.problem is None
    (big,) = read_all(tmp_path / "latin1.eml", "message", max_bytes=50)
    assert big.problem and big.problem.startswith("larger than ") and big.raw == b""


def test_a_file_that_cannot_be_read_is_a_file_problem(tmp_path: Path) -> None:
    (tmp_path / "notes.mbox").write_bytes(b"\nSubject: hi\n" + FROM)
    with pytest.raises(FileProblem, match="not an mbox: line 2 comes before any 'From <address> <date>' line"):
        read_all(tmp_path / "notes.mbox")
    os.mkfifo(tmp_path / "pipe.eml")
    (tmp_path / "gone.mbox").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileProblem, match="not a regular file"):
        read_all(tmp_path / "pipe.eml", "message")
    with pytest.raises(FileProblem, match="no such file"):
        read_all(tmp_path / "gone.mbox")


def maildir(root: Path, name: str = "Maildir") -> dict[str, bytes | str]:
    return {f"{name}/cur/1354585346.000260.host:2,S": eml("m1@x"),
            f"{name}/new/1354585400.000261.host": eml("m2@x"),
            f"{name}/tmp/1354585500.000262.host": eml("half-delivered@x"),  # being delivered: skipped
            f"{name}/cur/.hidden": eml("hidden@x"),
            f"{name}/dovecot-uidlist": "3 V1354585346 N3\n",
            f"{name}/dovecot.index.log": b"\x01\x02\x00\xff",
            f"{name}/.Sent/cur/1354585600.000263.host:2,S": eml("sent@x"),  # Maildir++
            f"{name}/.Sent/new/": "", f"{name}/.Sent/tmp/": "",
            f"{name}/.Sent/maildirfolder": "",
            f"{name}/.Archive.2024/cur/1354585700.000264.host:2,RS": eml("archived@x"),
            f"{name}/.Archive.2024/new/": "",
            f"{name}/.Drafts/cur/notes.md": eml("draft@x"),  # in a Maildir's box: a message, whatever its name
            f"{name}/.Drafts/new/": ""}


def test_a_maildir_tree(tmp_path: Path) -> None:
    box = write(tmp_path, maildir(tmp_path)) / "Maildir"
    found = find_files([box])
    assert found.documents == []
    assert [(m.path.relative_to(box).as_posix(), m.kind) for m in found.mail] == [
        (".Archive.2024/cur/1354585700.000264.host:2,RS", "message"),
        (".Drafts/cur/notes.md", "message"),
        (".Sent/cur/1354585600.000263.host:2,S", "message"),
        ("cur/1354585346.000260.host:2,S", "message"),
        ("new/1354585400.000261.host", "message")]
    # a message of a Maildir named by itself is recognised by its place
    assert kind_of(box / "cur" / "1354585346.000260.host:2,S") == "message"
    assert kind_of(box / "tmp" / "1354585500.000262.host") is None


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("a.md", "# notes", "document"), ("a.JSONL", "{}", "document"),
    ("a.eml", eml("a@x"), "message"), ("A.EML", "not even mail", "message"),  # refused when read
    ("a.mbox", MBOX, "mbox"), ("a.mbx", b"", "mbox"),
    ("Inbox", MBOX, "mbox"),  # Thunderbird: no suffix, known by its first line
    ("archive.txt.gz", MBOX, "mbox"),
    ("Inbox.msf", "// <!-- <mdb:mork:z v=\"1.4\"/> -->", None),
    ("scan.pdf", b"%PDF-1.7\n", None),
    ("README", "From here on, read this\n", None),
    ("message.txt", eml("t@x"), "document"),  # a text file stays a document
])
def test_the_kind_of_a_file_by_suffix_and_content(tmp_path: Path, name: str, content: str | bytes,
                                                   kind: str | None) -> None:
    write(tmp_path, {name: content})
    assert kind_of(tmp_path / name) == kind
    assert kind_of(tmp_path / name, "email") == "email"


def test_a_mixed_directory_sends_documents_and_mail_in_one_run(tmp_path: Path) -> None:
    root = write(tmp_path / "inbox", {
        "guide.md": "# a guide", "notes.jsonl": '{"text": "a note"}\n', "one.eml": eml("one@x"),
        "lists/archive.mbox": MBOX, "lists/Inbox": MBOX, "lists/Inbox.msf": "mork",
        "photo.jpg": b"\xff\xd8\xff\xe0", ".DS_Store": b"\x00\x00\x00\x01Bud1",
        **maildir(tmp_path, "mail")})
    inputs = read_files([root])
    assert [s.path.relative_to(root).as_posix() for s in inputs.sources] == ["guide.md", "notes.jsonl"]
    assert inputs.sources[0].docs == [{"external_id": "inbox/guide.md", "title": "guide", "text": "# a guide"}]
    assert [(m.path.relative_to(root).as_posix(), m.kind) for m in inputs.mail] == [
        ("lists/Inbox", "mbox"), ("lists/archive.mbox", "mbox"),
        ("mail/.Archive.2024/cur/1354585700.000264.host:2,RS", "message"), ("mail/.Drafts/cur/notes.md", "message"),
        ("mail/.Sent/cur/1354585600.000263.host:2,S", "message"), ("mail/cur/1354585346.000260.host:2,S", "message"),
        ("mail/new/1354585400.000261.host", "message"), ("one.eml", "message")]
    assert inputs.refused == []
    assert [m.size for m in inputs.mail][:2] == [len(MBOX), len(MBOX)]


def test_format_email_takes_every_file_but_a_maildirs_tmp(tmp_path: Path) -> None:
    root = write(tmp_path / "x", {"a.md": "# a", "b.pdf": b"%PDF", **maildir(tmp_path, "m")})
    found = find_files([root], "email")
    assert found.documents == [] and {m.kind for m in found.mail} == {"email"}
    names = {m.path.relative_to(root).as_posix() for m in found.mail}
    assert {"a.md", "b.pdf", "m/cur/.hidden", "m/dovecot-uidlist"} <= names
    assert not any("/tmp/" in n for n in names)


@pytest.mark.parametrize(("files", "named", "message"), [
    ({"scan.pdf": b"%PDF"}, "scan.pdf", "scan.pdf: unsupported file type (use .txt, .md, .json, .jsonl or .eml "
     "file, mbox or Maildir; --format email sends any file as one message)"),
    ({"d/scan.pdf": b"%PDF", "d/README": "From here on\n"}, "d",
     "d: no .txt, .md, .json, .jsonl or .eml file, mbox or Maildir in this directory or below"),
    ({"d/Maildir/tmp/1.host": eml("t@x"), "d/Maildir/cur/": "", "d/Maildir/new/": ""}, "d",
     "d: no .txt, .md, .json, .jsonl or .eml file, mbox or Maildir in this directory or below"),
])
def test_paths_without_anything_to_send_are_usage_errors(tmp_path: Path, files: dict[str, bytes | str],
                                                         named: str, message: str) -> None:
    write(tmp_path, files)
    with pytest.raises(ConfigError) as caught:
        find_files([tmp_path / named])
    assert caught.value.message == f"{tmp_path}/{message}"


def big_mbox(path: Path, size: int = 50 << 20) -> int:
    """Write an mbox of about ``size`` bytes of 2 KB messages; their count."""
    body = ("a line of a long discussion about cache eviction, quoted and requoted. " * 14 + "\n") * 2
    count = 0
    with path.open("wb") as out:
        while out.tell() < size:
            count += 1
            out.write(FROM + eml(f"m{count}@x", f"message {count}", body) + b"\n")
    return count


def test_a_50_mb_mbox_is_read_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    count = big_mbox(path)
    tracemalloc.start()
    try:
        seen = total = 0
        for message in messages(MailFile.of(path, "mbox")):
            seen += 1
            total += message.size
            assert message.problem is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (seen, total) == (count, path.stat().st_size)
    assert peak < 1 << 20, f"peak {peak} bytes while reading a {total}-byte mbox"
