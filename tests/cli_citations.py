"""Find the ``opsctl …`` command lines cited in runbooks and manifests and check them against the CLI.

A cited line resolves to a command path (``["scale", "explain"]``) by walking the real Typer/click
command tree; the options it uses must exist on that command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"`(opsctl [^`]+)`")
_SHELL_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "&"}


@dataclass(frozen=True)
class Citation:
    source: str
    line: str
    argv: tuple[str, ...]


def split_command(line: str) -> tuple[str, ...]:
    """The argv of an ``opsctl`` command line, without the program name, cut at pipes and comments."""
    words = shlex.split(line, comments=True)
    argv: list[str] = []
    for word in words[1:]:
        if word in _SHELL_STOP:
            break
        argv.append(word)
    return tuple(argv)


def citations_in_markdown(text: str, source: str) -> list[Citation]:
    """Every ``opsctl`` line inside fenced code blocks and every inline ``opsctl …`` code span."""
    found: list[Citation] = []
    for block in _FENCE.findall(text):
        for raw in block.splitlines():
            line = raw.strip().removeprefix("$ ")
            if line.startswith("opsctl "):
                found.append(Citation(source, line, split_command(line)))
    outside = _FENCE.sub("", text)
    for line in _INLINE.findall(outside):
        found.append(Citation(source, line, split_command(line)))
    return found


def root_command() -> Any:
    import typer

    from opsctl.cli import app

    return typer.main.get_command(app)


def resolve(root: Any, argv: tuple[str, ...]) -> tuple[list[str], Any, list[str]]:
    """(command path, click command, the remaining words) for ``argv``."""
    path: list[str] = []
    command = root
    rest = list(argv)
    while rest and hasattr(command, "commands"):
        if rest[0] in command.commands:
            name, rest = rest[0], rest[1:]
        elif getattr(command, "default_command", None):  # a group that runs one subcommand by default
            name = command.default_command
        else:
            break
        path.append(name)
        command = command.commands[name]
    return path, command, rest


def option_names(command: Any) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def problems(citation: Citation, root: Any) -> list[str]:
    """Why a cited command line would not parse: unknown command or unknown options."""
    path, command, rest = resolve(root, citation.argv)
    where = f"{citation.source}: `opsctl {' '.join(citation.argv)}`"
    if not path:
        return [f"{where}: no such command"]
    if hasattr(command, "commands") and rest and not rest[0].startswith("-") and not command.params:
        return [f"{where}: {' '.join(path)} has no subcommand {rest[0]!r}"]
    known = option_names(command) | option_names(root)
    return [f"{where}: {' '.join(path)} has no option {word.split('=')[0]}"
            for word in rest if word.startswith("-") and word.split("=")[0] not in known]
