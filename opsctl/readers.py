"""Files into documents for ``opsctl ingest``: one reader per format, chosen by the file's suffix.

A reader gets a file and the file's id, and returns the file's documents (each a dict the API
takes: ``external_id``, ``text``, …) or raises :class:`Refused` saying why the file cannot be
sent. A file is all or nothing: one bad line of a JSONL file refuses the file. Readers read
through :func:`opsctl.files.read_text` (a FIFO is refused instead of hanging; a size limit per
format) and refuse a text holding NUL characters (a binary file: the API refuses any NUL, and
``opsctl.loader`` then refuses the file by the API's answer). A new format (mail: ``.eml``,
``.mbox``) is one more reader in :data:`READERS`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from opsctl.files import FileProblem, read_text

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


def find_files(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """The files to ingest, each with the path named that led to it: each named file, and every file
    of a supported type under each named directory.

    A path that does not exist, a named file of another type and a directory without a supported
    file are usage errors (``ConfigError``, exit 2) naming the path: nothing is sent.
    """
    found: list[tuple[Path, Path]] = []
    for path in paths:
        if path.is_dir():
            # not only regular files: a FIFO or a broken link of a supported type is refused, not skipped
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in READERS and not p.is_dir())
            if not inside:
                raise ConfigError(f"{path}: no {', '.join(EXTENSIONS)} file in this directory or below")
            found.extend((p, path) for p in inside)
        elif path.exists():  # a file (or a FIFO …, which its reader refuses)
            if path.suffix.lower() not in READERS:
                raise ConfigError(f"{path}: unsupported file type (use {', '.join(EXTENSIONS)})")
            found.append((path, path))
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
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def read_files(paths: list[Path], on_refused: Callable[[Refusal], None] = lambda _: None,
               ) -> tuple[list[Source], list[Refusal]]:
    """Every file ``paths`` name, read: the sources (files with their documents, empty ones included)
    and the refusals (each also passed to ``on_refused`` as it happens). Usage errors as in
    :func:`find_files`, and when the files hold no document at all and none was refused."""
    sources, refused = [], []
    for path, named in find_files(paths):
        try:
            sources.append(Source(path, read_file(path, file_id(path, named))))
        except Refused as exc:
            refusal = Refusal(path, exc.reason)
            refused.append(refusal)
            on_refused(refusal)
    if not refused and not any(source.docs for source in sources):
        files = [str(source.path) for source in sources]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ConfigError(f"nothing to ingest: {shown} hold{'s' if len(files) == 1 else ''} no document "
                          "(empty text, an empty JSON list or blank JSONL lines)")
    return sources, refused


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
