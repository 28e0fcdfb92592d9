"""How ``opsctl threads show`` and ``opsctl emails show`` lay out the API's answers for a table (pure).

``-o json|yaml`` print the API's answers as they are; these functions only shape the table: a thread
as a tree drawn with connectors (``├─``, ``└─``, ``│``) in depth-first order, a ghost (a message the
thread's messages refer to and the company does not have) as ``(missing message <id>)``; one message
as field/value rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def thread_rows(thread: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per node of ``GET /v1/threads/{id}``'s ``messages``: the tree and subject, from, date, id."""
    messages = thread["messages"]
    rows = []
    for prefix, node in zip(tree_prefixes([m["depth"] for m in messages]), messages, strict=True):
        if node["ghost"]:
            rows.append({"message": f"{prefix}(missing message {node['message_id']})", "from": None, "date": None,
                         "message_id": None})
        else:
            rows.append({"message": prefix + (node.get("subject") or "(no subject)"), "from": node.get("from"),
                         "date": node.get("date"), "message_id": node["message_id"]})
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
