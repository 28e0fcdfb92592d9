"""Files opsctl writes and must trust later (digests), and files people hand it (``read_text``, from
``core.files``: the core reads its settings file with it too)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.files import FileProblem, read_text

__all__ = ["FileProblem", "read_text", "sha256_file"]

BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
