"""``opsctl search``: query the core as a tenant."""

from __future__ import annotations

import shlex
from enum import StrEnum

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, plural

HELP = """Search your company's documents and e-mail (hybrid, vector or keyword).

A hit on e-mail shows its thread (`opsctl threads show ID` draws it). --group-by thread answers one
hit per thread, its best match, with how many of the thread's messages matched (a document that
is not mail is a group of its own): k groups.

More hits: the table ends with the command for the next page (on stderr); with -o json or yaml,
pass the answer's next_cursor back with --cursor (the same query: no hit twice).

\b
Example: opsctl search "refund policy" -k 5 --mode hybrid -o json
         opsctl search "refund" --group-by thread
         opsctl search "refund policy" -k 5 --cursor AQEAAAAA…
"""


class GroupBy(StrEnum):
    thread = "thread"


def search(
    query: str = typer.Argument(..., metavar="QUERY", help="what to look for"),
    k: int = typer.Option(10, "-k", min=1, max=100, help="number of results"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, vector or keyword"),
    group_by: GroupBy | None = typer.Option(None, "--group-by", help="thread: one hit per e-mail thread"),
    cursor: str | None = typer.Option(None, "--cursor", help="next_cursor of the page before, with the same "
                                      "query, mode and --group-by: the next hits"),
    api_url: str | None = typer.Option(None, "--api-url", envvar="OPSCTL_API_URL", help="the core API"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPSCTL_API_KEY", help="a tenant API key"),
    output: Output = OUTPUT_OPTION,
) -> None:
    from opsctl.client import call
    from opsctl.context import api_client, settings

    if not query.strip():
        raise typer.BadParameter("the query is blank: say what to look for", param_hint="'QUERY'")
    if mode not in ("hybrid", "vector", "keyword"):
        raise typer.BadParameter("mode is hybrid, vector or keyword", param_hint="'--mode'")
    request = {"query": query, "k": k, "mode": mode, **({"group_by": group_by.value} if group_by else {}),
               **({"cursor": cursor} if cursor else {})}
    with api_client(settings(api_url=api_url, api_key=api_key)) as client:
        body = call(client, "POST", "/v1/search", json=request)
    if output is not Output.table:
        emit(body, output)
        return
    hits = body["results"]
    rows = [{"rank": i, "score": f"{r['score']:.4f}", "external_id": r["external_id"], "thread": r.get("thread_id"),
             "matched": r.get("matched_messages"), "text": " ".join(r["text"].split())[:100]}
            for i, r in enumerate(hits, start=1)]
    columns = [("rank", "#"), ("score", "SCORE")]
    if group_by or any(r["thread"] is not None for r in rows):
        columns.append(("thread", "THREAD"))
    if group_by:
        columns.append(("matched", "MATCHED"))
    columns += [("external_id", "DOCUMENT"), ("text", "TEXT")]
    what = plural(len(rows), "result") + (", one per thread" if group_by else "")
    took = f"{'cached, ' if body['cached'] else ''}{body['took_ms']:.1f} ms"
    emit(rows, output, columns=columns, title=f"{what} ({took})")
    if body.get("next_cursor"):
        told = shlex.quote(query)  # a query that begins with '-' only after '--', the options' end: last
        again = ["opsctl search" + ("" if query.startswith("-") else f" {told}"), f"-k {k}", f"--mode {mode}",
                 *([f"--group-by {group_by.value}"] if group_by else []), f"--cursor {body['next_cursor']}",
                 *([f"-- {told}"] if query.startswith("-") else [])]
        typer.echo("next page: " + " ".join(again), err=True)
