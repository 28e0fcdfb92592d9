"""``--help`` of every command, as a person at an 80-column terminal reads it: flags without a type
placeholder, paragraphs reflowed as written (no line breaks of the source inside a paragraph), and
the command's example."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli_citations import root_command

WIDTH = 80


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(sub, (*path, name))


EVERY_COMMAND = list(commands(root_command()))


def help_of(path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    from opsctl.cli import main

    monkeypatch.setenv("COLUMNS", str(WIDTH))
    assert main([*path, "--help"]) == 0
    out, err = capsys.readouterr()
    assert not err
    return out


def examples_of(path: tuple[str, ...]) -> list[str]:
    """The example commands of the source's help text, as written (its ``Example:`` paragraph: one
    command a line, or several on a line between runs of spaces and parenthesized remarks)."""
    command = root_command()
    for name in path:
        command = command.commands[name]
    match = re.search(r"Example: (opsctl .+?)(?:\n\s*\n|$)", command.help or "", re.DOTALL)
    assert match, f"opsctl {' '.join(path)}: no 'Example: opsctl …' in its help"
    pieces = re.split(r" {2,}|\n|\(or:|\)", match[1])
    return [" ".join(p.split()) for p in pieces if p.strip().startswith("opsctl ")]


def description(text: str) -> list[list[str]]:
    """The paragraphs of the help text between the usage line and the first section."""
    body = text.split("\n\n", 1)[1]
    body = re.split(r"^(?:Arguments|Options|Commands):$", body, maxsplit=1, flags=re.MULTILINE)[0]
    return [p.splitlines() for p in body.strip("\n").split("\n\n")]


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=lambda p: " ".join(p) or "opsctl")
def test_help_renders_flags_plainly_paragraphs_reflowed_and_the_example(
        path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_of(path, capsys, monkeypatch)
    assert "<bool>" not in text, text
    assert re.search(r"^\s+(-h, )?--help\s+Show this message and exit\.$", text, re.MULTILINE), text
    flat = " ".join(text.split())
    examples = examples_of(path)
    assert "Example: " + examples[0] in flat, text
    for example in examples:  # each one whole on its line, to copy, when the width allows
        assert example in flat, text
        if len(example) <= WIDTH - len("  Example: "):
            assert any(example in line for line in text.splitlines()), f"{example!r} broken across lines:\n{text}"
    for paragraph in description(text):
        if paragraph[0].strip().startswith("Example:"):
            continue  # examples keep their own lines
        for line, following in itertools.pairwise(paragraph):
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > WIDTH - 2, (
                f"a line break of the source inside a paragraph:\n{line}\n{following}\n\n{text}")
    assert all(len(line) <= WIDTH for line in text.splitlines()
               if not line.strip().startswith(("Example:", "opsctl "))), text


def test_a_flag_shows_no_type_and_an_option_its_choices(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_of(("events",), capsys, monkeypatch)
    assert re.search(r"^\s+--all\s+also decisions", text, re.MULTILINE), text
    assert re.search(r"^\s+-o, --output <table\|json\|yaml>", text, re.MULTILINE), text


def test_the_readme_names_the_commands_that_are_dry_runs_until_apply() -> None:
    """README: "… print their plan and change nothing unless `--apply`: `scale`, …; … The others act
    at once: …": both lists are what the commands really do (the ones with an --apply flag)."""
    from tests.cli_citations import resolve
    from tests.conftest import project_root

    text = " ".join((project_root() / "README.md").read_text().split())
    match = re.search(r"change nothing unless `--apply`: (.+?); `restore` asks before it writes.*?"
                      r"The others act at once: (.+?)\. ", text)
    assert match, "README lost its sentence on dry runs"
    root = root_command()

    def path_of(name: str) -> tuple[str, ...]:
        path, command, rest = resolve(root, tuple(name.split()))
        if hasattr(command, "commands") and getattr(command, "default_command", None):  # `scale`: scale decide
            path, command = [*path, command.default_command], command.commands[command.default_command]
        assert path and not rest and not hasattr(command, "commands"), f"README names no command {name!r}"
        return tuple(path)

    def with_apply(path: tuple[str, ...]) -> bool:
        _, command, _ = resolve(root, path)
        return any("--apply" in p.opts for p in command.params)

    dry = {path_of(n) for n in re.findall(r"`([a-z -]+)`", match[1])}
    at_once = {path_of(n) for n in re.findall(r"`([a-z -]+)`", match[2])}
    every = {p for p in EVERY_COMMAND if p and not hasattr(resolve(root, p)[1], "commands")}
    assert dry == {p for p in every if with_apply(p)}
    assert at_once and not any(with_apply(p) for p in at_once)
    _, restore, _ = resolve(root, ("restore",))
    assert any("--yes" in p.opts for p in restore.params)
