"""Runbooks: one Markdown file per alert, found in a checkout or in an installed package.

Where they are looked for, first match wins:

1. ``OPSCTL_RUNBOOK_DIR``;
2. ``runbooks/`` next to the ``opsctl`` package (a checkout, or ``pip install -e``);
3. ``<prefix>/share/opsctl/runbooks`` (a normal install: ``pyproject.toml`` ships them as data
   files), for the running interpreter's prefix and the user scheme.

A runbook's name is its file stem (``IngestBacklogHigh``); lookups ignore case and a ``.md``.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

SHARE = Path("share") / "opsctl" / "runbooks"
NOT_RUNBOOKS = {"readme"}
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.MULTILINE)
_FIRES = re.compile(r"^\*\*Fires when:\*\*\s*(.+?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)
_SEVERITY = re.compile(r"^\*\*Severity:\*\*\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def summary(self) -> dict[str, str]:
        """Name, severity and the one sentence saying when the alert fires."""
        text = self.text
        severity = _SEVERITY.search(text)
        fires = _FIRES.search(text)
        return {
            "name": self.name,
            "severity": severity.group(1) if severity else "",
            "fires_when": " ".join(fires.group(1).split()) if fires else "",
        }


def candidate_dirs() -> list[Path]:
    """Every directory runbooks may live in, in the order they are tried."""
    dirs: list[Path] = []
    env = os.environ.get("OPSCTL_RUNBOOK_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parent.parent / "runbooks")
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix]
    user = sysconfig.get_path("data", f"{os.name}_user") if f"{os.name}_user" in sysconfig.get_scheme_names() else None
    if user:
        prefixes.append(user)
    for prefix in prefixes:
        path = Path(prefix) / SHARE
        if path not in dirs:
            dirs.append(path)
    return dirs


def runbook_dir(candidates: list[Path] | None = None) -> Path:
    """The first candidate directory holding at least one runbook."""
    tried = candidates if candidates is not None else candidate_dirs()
    for path in tried:
        if path.is_dir() and any(_is_runbook(p) for p in path.glob("*.md")):
            return path
    raise ConfigError("no runbooks found; looked in " + ", ".join(str(p) for p in tried)
                      + " (set OPSCTL_RUNBOOK_DIR)")


def _is_runbook(path: Path) -> bool:
    return path.suffix == ".md" and path.stem.lower() not in NOT_RUNBOOKS


def all_runbooks(directory: Path | None = None) -> list[Runbook]:
    """Every runbook, sorted by name."""
    root = directory or runbook_dir()
    return sorted((Runbook(p.stem, p) for p in root.glob("*.md") if _is_runbook(p)), key=lambda r: r.name)


def find(name: str, directory: Path | None = None) -> Runbook:
    """The runbook called ``name`` (any case, with or without ``.md``); ConfigError lists the names."""
    books = all_runbooks(directory)
    wanted = name.strip().lower().removesuffix(".md")
    for book in books:
        if book.name.lower() == wanted:
            return book
    raise ConfigError(f"no runbook {name!r}; known: {', '.join(b.name for b in books)}")
