"""How deep a JSON text nests, found in one pass over the text, before a parser recurses into it (pure).

``json.loads`` recurses once per level: a 5,000-deep document is a ``RecursionError`` that says
neither where nor why, and a value only exists to walk once the parser has survived it.
:func:`deeper_than` reads the text itself and names the key path of the first container past the
limit (``metrics.backlog.value[0]…``), in time linear in the text: every character is matched by at
most one token, an unterminated string included (it runs to the end of the text, where the parser
then refuses it with a line).

It only counts: whether the text is JSON at all is left to the parser. Used by snapshot files
(:mod:`opsctl.scaling.snapshot`). :mod:`core.inputs` checks depth on parsed values instead
(``check_json``), because it also checks values that pydantic built without a text; where its
decoder gives up with a ``RecursionError`` it has the text and could name the path with this.
"""

from __future__ import annotations

import re
from typing import Any

# a string (an escape and the character after it consumed together; unterminated: to the end of the
# text) or a structural character; numbers, literals and whitespace are skipped. Nothing after the
# opening quote can fail, so no position is tried twice.
TOKEN = re.compile(r'"[^"\\]*(?:\\[\s\S]?[^"\\]*)*"?|[{}\[\],:]')
SHOWN_PARTS = 4  # of the path to the first container too deep


def deeper_than(text: str, limit: int) -> str | None:
    """The key path where ``text`` nests deeper than ``limit`` (``a.b[1][0]``), or None."""
    stack: list[list[Any]] = []  # per open container: [kind, key or index, expecting a key]
    for match in TOKEN.finditer(text):
        token = match.group()
        if token in ("{", "["):
            if len(stack) >= limit:
                return _path(stack)
            stack.append([token, 0 if token == "[" else None, token == "{"])
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif not stack:
            continue
        elif token == ",":
            if stack[-1][0] == "[":
                stack[-1][1] += 1
            else:
                stack[-1][2] = True
        elif token == ":":
            stack[-1][2] = False
        elif stack[-1][0] == "{" and stack[-1][2]:  # a string where a key is expected
            stack[-1][1] = token[1:-1]
    return None


def _path(stack: list[list[Any]]) -> str:
    parts = [f"[{key}]" if kind == "[" else f".{key}" for kind, key, _ in stack if key is not None]
    return ("".join(parts[:SHOWN_PARTS]) + ("…" if len(parts) > SHOWN_PARTS else "")).lstrip(".")
