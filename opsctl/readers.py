"""Files into documents for ``opsctl ingest``: one reader per format, chosen by the file's suffix;
and which of the files named are mail, read message by message (:mod:`opsctl.mailreaders`) and sent in batches
(:mod:`opsctl.mailsend`).

A reader gets a file and the file's id, and returns the file's documents (each a dict the API
takes: ``external_id``, ``text``, …) or raises :class:`Refused` saying why the file cannot be
sent. A file is all or nothing: one bad line of a JSONL file refuses the file. Readers read
through :func:`opsctl.files.read_text` (a FIFO is refused instead of hanging; a size limit per
format) and refuse a text holding NUL characters (a binary file: the API refuses any NUL, and
``opsctl.loader`` then refuses the file by the API's answer). A new document format is one more
reader in :data:`READERS`. Mail (``.eml``, mbox, Maildir; any file with ``--format email``) is not
read here: :func:`find_files` sets it apart, and :mod:`opsctl.mailreaders` streams it.

The file's id is where its documents' default external ids come from: the path from the
directory named on the command line, that directory's own name included (``opsctl ingest
./docs`` → ``docs/cache.md``), so that two directories ingested one after the other do not
replace each other's ``cache.md``; a file named on the command line keeps its path as written.
A JSON(L) document without an ``external_id`` gets ``<file id>#<line or index>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import ConfigError
from opsctl.files import FileProblem, read_text
from opsctl.mailreaders import MailFile, MailKind, mail_kind, maildir_place

Document = dict[str, Any]
TEXT_MAX_BYTES = 10 << 20  # the API's default max_body_bytes: a larger text cannot be sent as one document
JSON_MAX_BYTES = 512 << 20  # a JSON(L) file is read whole


class Refused(Exception):
    """Why a file cannot be ingested (its other files still are)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Reader = Callable[[Path, str], list[Document]]


def _text(path: Path, max_bytes: int, what: str) -> str:
    try:
        text = read_text(path, max_bytes, what)
    except FileProblem as exc:
        raise Refused(exc.reason) from None
    if "\x00" in text:
        raise Refused("holds NUL characters (a binary file?), which no document may hold")
    return text


def _document(obj: Any, default_id: str, where: str) -> Document:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise Refused(f"{where}: expected an object with a \"text\" string (and an \"external_id\")")
    return obj if obj.get("external_id") else {**obj, "external_id": default_id}


def read_plain(path: Path, file_id: str) -> list[Document]:
    """``.txt``, ``.md``: the file is one document (none if it is blank), titled by its name."""
    text = _text(path, TEXT_MAX_BYTES, "a document")
    return [{"external_id": file_id, "title": path.stem, "text": text}] if text.strip() else []


def read_json(path: Path, file_id: str) -> list[Document]:
    """``.json``: a document, a list of documents, or ``{"documents": [...]}``."""
    text = _text(path, JSON_MAX_BYTES, "a JSON file of documents")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise Refused(f"not valid JSON: {exc}") from None
    items = data.get("documents") if isinstance(data, dict) and "documents" in data else data
    if isinstance(items, list):
        return [_document(obj, f"{file_id}#{i}", f"[{i}]") for i, obj in enumerate(items)]
    return [_document(items, file_id, "the file")]


def read_jsonl(path: Path, file_id: str) -> list[Document]:
    """``.jsonl``: one document per line (blank lines skipped)."""
    text = _text(path, JSON_MAX_BYTES, "a JSONL file of documents")
    docs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise Refused(f"line {number}: not valid JSON: {exc}") from None
        docs.append(_document(obj, f"{file_id}#{number}", f"line {number}"))
    return docs


READERS: dict[str, Reader] = {".txt": read_plain, ".md": read_plain, ".json": read_json, ".jsonl": read_jsonl}
EXTENSIONS = tuple(READERS)


def read_file(path: Path, file_id: str) -> list[Document]:
    """The documents of one file, by the reader of its suffix; ``Refused`` if it cannot be sent."""
    return READERS[path.suffix.lower()](path, file_id)


def file_id(path: Path, named: Path) -> str:
    """The id of ``path``, found under ``named`` (a directory named on the command line, or the file
    itself): its path from the directory's parent, ``/``-separated (pure)."""
    if path == named:
        return path.as_posix()
    # the directory's own name as written, without resolving symlinks ("." and ".." become names)
    name = os.path.basename(os.path.normpath(named.absolute()))
    return (Path(name) / path.relative_to(named)).as_posix()


Format = Literal["auto", "email"]  # by suffix and content, or every file one mail message
WANTED = f"{', '.join(EXTENSIONS)} or .eml file, mbox or Maildir"


def kind_of(path: Path, format: Format = "auto") -> Literal["document"] | MailKind | None:
    """What ``path`` holds: documents (by suffix, unless it sits in a Maildir), mail (see
    :func:`opsctl.mailreaders.mail_kind`; any file with ``format="email"``, but a Maildir's ``tmp/``),
    or nothing to send."""
    place = maildir_place(path)
    if place == "tmp":
        return None
    if format == "email":
        return "email"
    if place is None and path.suffix.lower() in READERS:
        return "document"
    return mail_kind(path)


@dataclass(frozen=True)
class Found:
    """The files of a run: documents (each with the path named that led to it), and mail."""

    documents: list[tuple[Path, Path]] = field(default_factory=list)
    mail: list[MailFile] = field(default_factory=list)


def find_files(paths: Iterable[Path], format: Format = "auto") -> Found:
    """The files to ingest: each named file, and every file of a supported type under each named
    directory; documents by suffix (:data:`READERS`), mail by :func:`opsctl.mailreaders.mail_kind`
    (with ``format="email"``, every file is one message).

    A path that does not exist, a named file of another type and a directory without a supported
    file are usage errors (``ConfigError``, exit 2) naming the path: nothing is sent.
    """
    found = Found()

    def take(path: Path, named: Path) -> bool:
        kind = kind_of(path, format)
        if kind == "document":
            found.documents.append((path, named))
        elif kind is not None:
            found.mail.append(MailFile.of(path, kind))
        return kind is not None

    for path in paths:
        if path.is_dir():
            # not only regular files: a FIFO or a broken link of a supported type is refused, not skipped
            taken = [take(p, path) for p in sorted(path.rglob("*")) if not p.is_dir()]
            if not any(taken):
                raise ConfigError(f"{path}: no {WANTED} in this directory or below")
        elif path.exists():  # a file (or a FIFO …, which its reader refuses)
            if not take(path, path):
                raise ConfigError(f"{path}: unsupported file type (use {WANTED}; --format email sends any file "
                                  "as one message)")
        else:
            raise ConfigError(f"{path}: no such file or directory")
    return found


@dataclass
class Source:
    """One file and its documents."""

    path: Path
    docs: list[Document]


@dataclass(frozen=True)
class Refusal:
    """A file, or one message of an mbox (its number and the line of its ``From_`` line), not sent."""

    path: Path
    reason: str
    message: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" message {self.message} (line {self.line}):" if self.message is not None else ""
        return f"{self.path}:{where} {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": str(self.path)}
        if self.message is not None:
            out.update(message=self.message, line=self.line)
        return {**out, "error": self.reason}


@dataclass
class Inputs:
    """What a run sends: the document files read (with their documents), the files refused, the mail."""

    sources: list[Source]
    refused: list[Refusal]
    mail: list[MailFile]


def read_files(paths: list[Path], on_refused: Callable[[Refusal], None] = lambda _: None,
               format: Format = "auto") -> Inputs:
    """Every file ``paths`` name: the document files read (empty ones included), the refusals (each also
    passed to ``on_refused`` as it happens), and the mail files, not read yet. Usage errors as in
    :func:`find_files`, and when there is no mail and the files hold no document at all and none was
    refused."""
    found = find_files(paths, format)
    sources, refused = [], []
    for path, named in found.documents:
        try:
            sources.append(Source(path, read_file(path, file_id(path, named))))
        except Refused as exc:
            refusal = Refusal(path, exc.reason)
            refused.append(refusal)
            on_refused(refusal)
    if not found.mail and not refused and not any(source.docs for source in sources):
        raise nothing_to_ingest([source.path for source in sources],
                                "no document (empty text, an empty JSON list or blank JSONL lines)")
    return Inputs(sources, refused, found.mail)


def nothing_to_ingest(files: list[Path], what: str) -> ConfigError:
    """The usage error of a run whose ``files`` hold nothing: ``nothing to ingest: a.md holds <what>``."""
    shown = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return ConfigError(f"nothing to ingest: {shown} hold{'s' if len(files) == 1 else ''} {what}")


def duplicate_ids(sources: Iterable[Source]) -> Iterator[tuple[str, list[Path]]]:
    """Each external id held by more than one document, with the files they come from, a file once per
    document (pure): the API keeps the last one sent, so the others are replaced."""
    seen: dict[str, list[Path]] = {}
    for source in sources:
        for doc in source.docs:
            seen.setdefault(str(doc["external_id"]), []).append(source.path)
    for external_id, paths in seen.items():
        if len(paths) > 1:
            yield external_id, paths
