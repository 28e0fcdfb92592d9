"""How ``opsctl threads show`` and ``opsctl emails show`` lay out the API's answers for a table (pure).

``-o json|yaml`` print the API's answers as they are; these functions only shape the table: a thread
as a tree drawn with connectors (``├─``, ``└─``, ``│``) in depth-first order, a ghost (a message the
thread's messages refer to and the company does not have) as ``(missing message <id>)``; one message
as field/value rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.humanize import format_bytes, plural

BRANCH, LAST, THROUGH, EMPTY = "├─ ", "└─ ", "│  ", "   "


def tree_prefixes(depths: Sequence[int]) -> list[str]:
    """The drawing before each node of a tree given depth-first by its nodes' depths: a root (depth 0)
    gets none; a node ``├─`` when a sibling follows it, else ``└─``, after a ``│`` for each ancestor
    (but the roots) that a sibling still follows. One pass from the end, O(nodes x depth)."""
    later: list[bool] = []  # later[level]: a node of that level follows, before any shallower one
    prefixes = [""] * len(depths)
    for i in range(len(depths) - 1, -1, -1):
        depth = depths[i]
        later.extend([False] * (depth + 1 - len(later)))
        if depth:
            ancestors = "".join(THROUGH if later[level] else EMPTY for level in range(1, depth))
            prefixes[i] = ancestors + (BRANCH if later[depth] else LAST)
        later[depth] = True
        del later[depth + 1:]
    return prefixes


def wrap_guides(prefix: str) -> str:
    """The drawing before the second and later lines of a node whose text wraps: its ancestors' lines,
    and its own line down to its next sibling while one follows (``├─`` becomes ``│``, ``└─`` blank)."""
    if not prefix:
        return ""
    return prefix[: -len(BRANCH)] + (THROUGH if prefix.endswith(BRANCH) else EMPTY)


TEXT_ROOM = 20  # the cells a node's text keeps however deep it is: the drawing gives way past that


def fit_drawing(prefix: str, room: int) -> tuple[str, str]:
    """(the drawing before a node's first line, before its wrapped lines) in at most ``room`` cells: a
    node too deep for that keeps the end of its drawing after ``…`` (its own connector and its nearest
    ancestors' lines), so every node past that depth starts its text in the same column."""
    guides = wrap_guides(prefix)
    if len(prefix) <= room:  # the connectors are one cell each
        return prefix, guides
    if room < 2:
        return "", ""
    return "…" + prefix[len(prefix) - room + 1:], " " + guides[len(guides) - room + 1:]


@dataclass(frozen=True)
class TreeCell:
    """A node of a drawn tree as a table cell: ``text`` after its ``prefix``, its wrapped lines after
    ``wrap_guides(prefix)``, so that a subject folded by a narrow terminal stays inside its branch
    (``fit_drawing``: a node deeper than the column allows keeps ``TEXT_ROOM`` cells for its text).
    ``str()`` is the cell on one line."""

    prefix: str
    text: str

    def __str__(self) -> str:
        return self.prefix + self.text

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.cells import cell_len
        from rich.measure import Measurement

        longest_word = max((cell_len(word) for word in self.text.split()), default=0)
        return Measurement(min(len(self.prefix), TEXT_ROOM) + min(longest_word, TEXT_ROOM),
                           cell_len(str(self))).with_maximum(options.max_width)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        first, rest = fit_drawing(self.prefix, options.max_width - TEXT_ROOM)
        width = max(options.max_width - len(first), 1)
        for index, line in enumerate(Text(self.text).wrap(console, width, overflow="fold")):
            yield Text(first if index == 0 else rest) + line


def thread_rows(thread: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per node of ``GET /v1/threads/{id}``'s ``messages``: the tree and subject (a ``TreeCell``),
    from, date, id."""
    messages = thread["messages"]
    rows = []
    for prefix, node in zip(tree_prefixes([m["depth"] for m in messages]), messages, strict=True):
        if node["ghost"]:
            rows.append({"message": TreeCell(prefix, f"(missing message {node['message_id']})"), "from": None,
                         "date": None, "message_id": None})
        else:
            rows.append({"message": TreeCell(prefix, node.get("subject") or "(no subject)"),
                         "from": node.get("from"), "date": node.get("date"), "message_id": node["message_id"]})
    return rows


def thread_title(thread: Mapping[str, Any], timestamp: Any) -> str:
    """``thread 7: Cache eviction — 5 messages from 3 participants, <first> to <last>``."""
    span = f"{timestamp(thread['first_at'])} to {timestamp(thread['last_at'])}" if thread.get("first_at") else ""
    return (f"thread {thread['thread_id']}: {thread.get('subject') or '(no subject)'} — "
            f"{plural(thread['message_count'], 'message')} from {plural(len(thread['participants']), 'participant')}"
            + (f", {span}" if span else ""))


def attachment_line(attachment: Mapping[str, Any]) -> str:
    """``report.pdf (application/pdf, 1.2 MiB, not indexed)``."""
    indexed = "indexed" if attachment.get("indexed") else "not indexed"
    return (f"{attachment.get('filename') or '(no name)'} ({attachment['content_type']}, "
            f"{format_bytes(attachment['size'])}, {indexed})")


def email_path(message_id: str) -> str | None:
    """``GET /v1/emails/{id}``'s path for a Message-ID as a person gives it: bare, in its brackets, or as
    its header has it (a comment after it, a space inside, longer than the core keeps). The id is
    normalised as the core stored it (``core.mail.lookup.asked_id``, as the API does too), then URL-encoded
    whole; None when it is blank."""
    from urllib.parse import quote

    from core.mail.lookup import asked_id

    bare = asked_id(message_id)
    return f"/v1/emails/{quote(bare, safe='')}" if bare else None


EMAIL_FIELDS = (("message_id", "message id"), ("thread_id", "thread"), ("subject", "subject"), ("from", "from"),
                ("to", "to"), ("cc", "cc"), ("date", "date"), ("in_reply_to", "in reply to"),
                ("references", "references"), ("attachments", "attachments"), ("notes", "notes"),
                ("synthetic_id", "id from content"))


def email_rows(email: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``GET /v1/emails/{id}`` as field/value rows: lists one item a line, attachments described."""
    rows = []
    for key, name in EMAIL_FIELDS:
        value = email.get(key)
        if key == "attachments":
            value = "\n".join(attachment_line(a) for a in value or [])
        elif isinstance(value, list):
            value = "\n".join(str(v) for v in value)
        rows.append({"field": name, "value": value})
    return rows
