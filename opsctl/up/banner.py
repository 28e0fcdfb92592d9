"""What ``opsctl up`` prints once everything runs: the endpoints, then how to try it (pure).

Plain lines, a name and its URL each, never wrapped: a URL must survive copy and paste from a
narrow terminal and from ``make up 2>&1 | tee log`` (a file is 80 columns to a table). The curl
lines are the ones ``tests/test_up_banner.py`` runs against a real ``opsctl up``: ``curl -d``
sends ``application/x-www-form-urlencoded`` unless told otherwise, which the API refuses (415),
so each names its Content-Type (``-H``: ``--json`` needs curl 7.82, newer than some LTS systems).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TITLE = "opsctl is up:"


def endpoint_lines(rows: Mapping[str, str]) -> list[str]:
    """``  name       value`` per row, names padded to one column, values whole."""
    width = max((len(name) for name in rows), default=0)
    return [f"  {name:<{width}}  {value}" for name, value in rows.items()]


def try_it(api: str, activate: str | None = None) -> list[str]:
    """Shell lines for a second terminal: a tenant's key, a document in, a search (``activate``: the venv's
    activate script, when ``opsctl`` runs from one)."""
    json_body = "-H 'Content-Type: application/json'"
    return [
        *([f". {activate}"] if activate else []),
        "KEY=$(opsctl tenant create demo -o json \\",
        "      | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"api_key\"])')",
        f"curl -sS -X POST {api}/v1/documents -H \"Authorization: Bearer $KEY\" {json_body} \\",
        "     -d '{\"documents\": [{\"external_id\": \"hello\", \"text\": \"Hello from opsctl\"}]}'",
        "echo",
        f"curl -sS -X POST {api}/v1/search -H \"Authorization: Bearer $KEY\" {json_body} \\",
        "     -d '{\"query\": \"hello\"}'",
        "echo",
    ]


def banner(rows: Mapping[str, str], notes: Sequence[str], api: str, activate: str | None = None) -> list[str]:
    """Every line ``opsctl up`` prints once it runs."""
    return [TITLE, *endpoint_lines(rows), *notes, "", "In another terminal:",
            *(f"  {line}" for line in try_it(api, activate)), "",
            "Ctrl-C stops everything (a second Ctrl-C forces)."]
