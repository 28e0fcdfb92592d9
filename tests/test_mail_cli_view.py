"""How ``opsctl threads show`` and ``opsctl emails show`` lay out the API's answers (pure): the tree's
connectors from depths alone, ghosts, the thread's title, a message as field/value rows."""

from __future__ import annotations

from typing import Any

import pytest

from opsctl.mailview import email_rows, thread_rows, thread_title, tree_prefixes
from opsctl.output import timestamp


@pytest.mark.parametrize(("depths", "drawn"), [
    ([], []),
    ([0], [""]),
    ([0, 1, 1], ["", "├─ ", "└─ "]),
    ([0, 1, 2, 2, 1, 2], ["", "├─ ", "│  ├─ ", "│  └─ ", "└─ ", "   └─ "]),
    ([0, 1, 2, 3, 1], ["", "├─ ", "│  └─ ", "│     └─ ", "└─ "]),
    ([0, 1, 2, 3, 2, 1], ["", "├─ ", "│  ├─ ", "│  │  └─ ", "│  └─ ", "└─ "]),
    ([0, 1, 0, 1], ["", "└─ ", "", "└─ "]),  # two roots: no line joins them
])
def test_tree_prefixes(depths: list[int], drawn: list[str]) -> None:
    assert tree_prefixes(depths) == drawn


def node(message_id: str, depth: int, parent: str | None, ghost: bool = False, subject: str | None = "Cache",
         sender: str | None = "Ann <ann@x>", date: str | None = "2026-01-05T09:00:00+00:00") -> dict[str, Any]:
    if ghost:
        subject = sender = date = None
    return {"message_id": message_id, "parent": parent, "depth": depth, "ghost": ghost, "subject": subject,
            "from": sender, "date": date}


THREAD = {"thread_id": 7, "subject": "Cache", "message_count": 3, "participants": ["Ann <ann@x>", "Bob <bob@x>"],
          "first_at": "2026-01-05T09:00:00+00:00", "last_at": "2026-01-06T10:30:00+00:00",
          "messages": [node("root@x", 0, None), node("gone@x", 1, "root@x", ghost=True),
                       node("r1@x", 2, "gone@x", subject="Re: Cache", sender="Bob <bob@x>"),
                       node("r2@x", 2, "gone@x", subject=None, date=None)]}


def test_a_thread_as_rows_with_its_ghost() -> None:
    assert [{**row, "message": str(row["message"])} for row in thread_rows(THREAD)] == [
        {"message": "Cache", "from": "Ann <ann@x>", "date": "2026-01-05T09:00:00+00:00", "message_id": "root@x"},
        {"message": "└─ (missing message gone@x)", "from": None, "date": None, "message_id": None},
        {"message": "   ├─ Re: Cache", "from": "Bob <bob@x>", "date": "2026-01-05T09:00:00+00:00",
         "message_id": "r1@x"},
        {"message": "   └─ (no subject)", "from": "Ann <ann@x>", "date": None, "message_id": "r2@x"}]
    assert thread_title(THREAD, timestamp) == ("thread 7: Cache — 3 messages from 2 participants, "
                                               "2026-01-05 09:00:00Z to 2026-01-06 10:30:00Z")


def test_a_message_as_field_value_rows() -> None:
    email = {"message_id": "a@x", "thread_id": 7, "subject": "Invoice", "from": "Ann <ann@x>", "to": ["b@x", "c@x"],
             "cc": [], "date": None, "in_reply_to": "z@x", "references": ["y@x", "z@x"],
             "attachments": [{"filename": "invoice.pdf", "content_type": "application/pdf", "size": 1258291,
                              "indexed": False},
                             {"filename": None, "content_type": "text/plain", "size": 300, "indexed": True}],
             "notes": ["unparseable Date: 'yesterday'"], "synthetic_id": False}
    assert {r["field"]: r["value"] for r in email_rows(email)} == {
        "message id": "a@x", "thread": 7, "subject": "Invoice", "from": "Ann <ann@x>", "to": "b@x\nc@x", "cc": "",
        "date": None, "in reply to": "z@x", "references": "y@x\nz@x",
        "attachments": "invoice.pdf (application/pdf, 1.2 MiB, not indexed)\n(no name) (text/plain, 300 B, indexed)",
        "notes": "unparseable Date: 'yesterday'", "id from content": False}


LONG = ("Re: [RFC][PATCH 04/10] cifs: define server-level cache index objects and register them with FS-Cache "
        "so that a later mount of the same server finds its cookies again")


def message_column(out: str) -> list[str]:
    """The MESSAGE column of a rendered thread table, one string a line (the header row gives its width)."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "MESSAGE" in line and "┃" in line)
    width = lines[header].index("┃")
    return [line[:width] for line in lines[header + 2:]]


@pytest.mark.parametrize("width", [80, 120])
def test_a_subject_wrapped_in_a_narrow_terminal_keeps_the_tree_drawn(
        width: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # a long subject folds over several lines: each of them stays inside its node's branch (the lines of
    # its ancestors and, while a sibling follows, its own), so the tree reads the same at any width
    from opsctl.output import Output, emit

    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    messages = [node("root@x", 0, None, subject=LONG), node("a@x", 1, "root@x", subject=LONG),
                node("a1@x", 2, "a@x", subject=LONG), node("b@x", 1, "root@x", subject=LONG),
                node("b1@x", 2, "b@x", subject="Re: short")]
    emit(thread_rows({**THREAD, "messages": messages}), Output.table,
         columns=[("message", "MESSAGE"), ("from", "FROM"), ("date", "DATE"), ("message_id", "MESSAGE ID")])
    column = message_column(capsys.readouterr().out)
    starts = [i for i, line in enumerate(column) if line.lstrip(" │").startswith(("├─", "└─", "Re: [RFC]"))
              and (i == 0 or "─ " in line)]
    assert len(starts) == 5 and len(column) > 5, column  # the subjects did wrap
    guides = ["", "│  ", "│     ", "   ", "      "]  # before each node's wrapped lines
    for node_index, (start, end) in enumerate(zip(starts, [*starts[1:], len(column)], strict=True)):
        for line in column[start + 1:end]:
            text = line[1:]  # the cell's padding
            assert text.startswith(guides[node_index]) and text[len(guides[node_index]):][:1] not in (" ", ""), \
                (node_index, line, column)


@pytest.mark.parametrize("header", [
    "<billing-1@acme.example>", "billing-1@acme.example", "  <billing-1@acme.example>  ",
    "<a/b%c+d e@x.example>",  # a space inside the brackets: the core keeps the id without it
    "<" + "n" * 700 + "@long.example>",  # longer than the core keeps: it is stored as its start and a hash
    "<Case@Sensitive.example> (comment)", "<a@x>\t"])
def test_a_message_id_given_as_its_header_has_it_finds_the_stored_message(header: str) -> None:
    from urllib.parse import unquote

    from core.mail.message import parse_message
    from opsctl.mailview import email_path

    stored = parse_message(f"Message-ID: {header}\nSubject: x\n\nbody\n".encode()).message_id
    path = email_path(header)
    assert path.startswith("/v1/emails/") and "/" not in path.removeprefix("/v1/emails/")
    assert unquote(path.removeprefix("/v1/emails/")) == stored


@pytest.mark.parametrize("blank", ["", "  ", "<>", "< >"])
def test_a_blank_message_id_has_no_path(blank: str) -> None:
    from opsctl.mailview import email_path

    assert email_path(blank) is None


def test_a_thread_deeper_than_the_terminal_is_wide_still_shows_its_subjects(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # a long back-and-forth nests 40 deep: its drawing would take the whole column; past the room the
    # column has, a node keeps the end of its drawing ("…" first) and its subject stays readable
    from opsctl.output import Output, emit

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    messages = [node(f"m{i}@x", i, f"m{i - 1}@x" if i else None, subject="Re: the invoice for March")
                for i in range(40)]
    emit(thread_rows({**THREAD, "messages": messages}), Output.table,
         columns=[("message", "MESSAGE"), ("from", "FROM"), ("date", "DATE"), ("message_id", "MESSAGE ID")])
    column = message_column(capsys.readouterr().out)
    assert len(column) <= 2 * len(messages), column
    assert sum("Re: the invoice" in line for line in column) == len(messages), column
    assert any(line.lstrip().startswith("…") for line in column)


@pytest.mark.parametrize(("prefix", "room", "drawn"), [
    ("", 10, ("", "")),
    ("├─ ", 10, ("├─ ", "│  ")),
    ("│  └─ ", 6, ("│  └─ ", "│     ")),  # fits exactly
    ("│  │  ├─ ", 7, ("…│  ├─ ", " │  │  ")),  # the end of the drawing, its own connector kept
    ("   └─ ", 4, ("…└─ ", "    ")),
    ("│  ├─ ", 1, ("", "")),  # no room at all: the text alone
])
def test_a_deep_drawing_fits_its_room(prefix: str, room: int, drawn: tuple[str, str]) -> None:
    from opsctl.mailview import fit_drawing

    assert fit_drawing(prefix, room) == drawn
    assert all(len(part) <= max(room, 0) for part in drawn)
