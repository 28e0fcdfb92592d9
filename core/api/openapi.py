"""The OpenAPI document (``/openapi.json``, ``/v1/openapi.json``) and an offline docs page (``/docs``).

FastAPI builds the document from the declared bodies, responses and dependencies; ``build`` adds
what only this process knows (its limits from settings) and the shared ``JsonValue`` schema.
``docs_page`` renders the same document as one self-contained HTML page: no script, no CDN.
"""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from core.api.body import BODY_MODELS
from core.api.deps import SECURITY_SCHEMES
from core.inputs import JSON_VALUE_SCHEMA

if TYPE_CHECKING:
    from core.config import Settings

DESCRIPTION = """The ingest/search core of opsctl.

Send `Authorization: Bearer <API key>` (a tenant key: `opsctl tenant create` prints one); a key
acts for exactly one company. `/admin/*` takes the admin token (`OPSCTL_ADMIN_TOKEN`).

Every error is `{"error": {"code", "message"}}` with a 4xx for anything a client sent; a refused
request writes nothing. A 202 on ingest means the documents are durable.

Every answer carries `X-Request-ID`: the one the request sent (characters outside
`A-Z a-z 0-9 . _ : / + = @ -` dropped, at most 128 kept) or a new one; the service's logs carry it.
"""

# (component, property, JSON Schema keyword, setting): limits this process was configured with
LIMITS = (
    ("DocumentsIn", "documents", "maxItems", "max_documents_per_request"),
    ("DocumentIn", "text", "maxLength", "max_text_chars"),
    ("SearchRequest", "k", "maximum", "search_max_k"),
)
PHANTOMS = ("HTTPValidationError", "ValidationError")  # FastAPI's 422 shape, which this API never sends


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes)
    spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schemas = spec["components"].setdefault("schemas", {})
    schemas["JsonValue"] = JSON_VALUE_SCHEMA
    for name, schema in body_schemas(tuple(BODY_MODELS)).items():
        schemas.setdefault(name, schema)
    for component, prop, keyword, setting in LIMITS:
        schemas[component]["properties"][prop][keyword] = getattr(settings, setting)
    for name in PHANTOMS:
        schemas.pop(name, None)
    return spec


def body_schemas(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """The component schemas of the bodies routes read themselves (``body.json_body`` in their
    ``openapi_extra``), as FastAPI writes them: from routes declaring them, never mounted."""
    routes = []
    for model in models:
        async def describe(body: Any) -> None: ...
        describe.__annotations__ = {"body": model, "return": None}
        routes.append(APIRoute(f"/{model.__name__}", describe, methods=["POST"]))
    schemas: dict[str, Any] = get_openapi(title="", version="", routes=routes)["components"]["schemas"]
    return schemas


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the document at ``app.openapi_url`` and ``/v1/openapi.json``, and ``/docs``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    page: list[str] = []

    async def v1_openapi() -> JSONResponse:
        return JSONResponse(openapi())

    async def docs() -> HTMLResponse:
        if not page:
            page.append(docs_page(openapi()))
        return HTMLResponse(page[0])

    app.add_api_route("/v1/openapi.json", v1_openapi, include_in_schema=False)
    app.add_api_route("/docs", docs, include_in_schema=False)


# -- the docs page ----------------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}h3{margin:1.8rem 0 .3rem;font-family:monospace}
.m{display:inline-block;min-width:4.5rem;padding:0 .4rem;border-radius:3px;color:#fff;text-align:center}
.get{background:#2b7bb9}.post{background:#3a9a4a}.put{background:#b98a2b}.delete{background:#b93a2b}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;vertical-align:top;
text-align:left}pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:13px}code{font-size:13px}
"""
_REF = re.compile(r"&quot;#/components/schemas/([A-Za-z0-9_.-]+)&quot;")


def _schema(schema: Any) -> str:
    text = html.escape(json.dumps(schema, indent=2, ensure_ascii=False))
    return "<pre>" + _REF.sub(r'&quot;<a href="#schema-\1">\1</a>&quot;', text) + "</pre>"


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    out = [f'<h3 id="{html.escape(op.get("operationId", path))}"><span class="m {method}">{method.upper()}</span> '
           f"{html.escape(path)}</h3>", f"<p><b>{html.escape(op.get('summary', ''))}</b></p>"]
    if op.get("description"):
        out.append(f"<p>{html.escape(op['description'])}</p>")
    schemes = [name for requirement in op.get("security", []) for name in requirement]
    if schemes:
        out.append(f"<p>Auth: {html.escape(', '.join(schemes))}</p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th><th>about</th></tr>")
        for p in params:
            out.append(f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p['in'])}</td>"
                       f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_schema(p.get('schema', {}))}</td>"
                       f"<td>{html.escape(p.get('description', ''))}</td></tr>")
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        out.append(f"<p>Request body{' (required)' if body.get('required') else ''}"
                   f"{': ' + html.escape(body['description']) if body.get('description') else ''}</p>")
        for media, content in body.get("content", {}).items():
            out.append(f"<p><code>{html.escape(media)}</code></p>{_schema(content.get('schema', {}))}")
    out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, response in op.get("responses", {}).items():
        bodies = "".join(f"<code>{html.escape(media)}</code>{_schema(c.get('schema', {}))}"
                         for media, c in response.get("content", {}).items())
        headers = ", ".join(response.get("headers", {}))
        about = html.escape(response.get("description", ""))
        if headers:
            about += f"<br>headers: {html.escape(headers)}"
        out.append(f"<tr><td>{html.escape(str(status))}</td><td>{about}</td><td>{bodies}</td></tr>")
    out.append("</table>")
    return out


def docs_page(spec: dict[str, Any]) -> str:
    """The whole document as one HTML page (everything inline: it works offline)."""
    info = spec.get("info", {})
    title = html.escape(f"{info.get('title', 'API')} {info.get('version', '')}")
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{title}</title><style>{STYLE}</style>",
           f"</head><body><h1>{title}</h1>",
           "<p>The machine-readable description: <a href='/openapi.json'>/openapi.json</a>.</p>",
           "".join(f"<p>{html.escape(par)}</p>" for par in info.get("description", "").split("\n\n")),
           "<h2>Operations</h2>"]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            out.extend(_operation(path, method, op))
    out.append("<h2>Schemas</h2>")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out.append(f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3>{_schema(schema)}')
    security = spec.get("components", {}).get("securitySchemes", {})
    if security:
        out.append("<h2>Authentication</h2>")
        for name, scheme in security.items():
            out.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(scheme.get('type', ''))} "
                       f"{html.escape(scheme.get('scheme', ''))}: {html.escape(scheme.get('description', ''))}</p>")
    out.append("</body></html>")
    return "\n".join(out)
