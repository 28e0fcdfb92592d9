"""``opsctl search``: query the core as a tenant."""

from __future__ import annotations

import typer

from opsctl.output import OUTPUT_OPTION, Output, emit, plural

HELP = """Search your company's documents (hybrid, vector or keyword).

Example: opsctl search "refund policy" -k 5 --mode hybrid -o json
"""


def search(
    query: str = typer.Argument(..., metavar="QUERY", help="what to look for"),
    k: int = typer.Option(10, "-k", min=1, max=100, help="number of results"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, vector or keyword"),
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
    with api_client(settings(api_url=api_url, api_key=api_key)) as client:
        body = call(client, "POST", "/v1/search", json={"query": query, "k": k, "mode": mode})
    if output is not Output.table:
        emit(body, output)
        return
    rows = [{"rank": i, "score": f"{r['score']:.4f}", "external_id": r["external_id"],
             "text": " ".join(r["text"].split())[:100]} for i, r in enumerate(body["results"], start=1)]
    emit(rows, output, columns=[("rank", "#"), ("score", "SCORE"), ("external_id", "DOCUMENT"), ("text", "TEXT")],
         title=f"{plural(len(rows), 'result')} ({'cached, ' if body['cached'] else ''}{body['took_ms']:.1f} ms)")
