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
    assert thread_rows(THREAD) == [
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
