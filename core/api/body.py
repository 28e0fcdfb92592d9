"""Request bodies: read by the route, parsed by ``core.inputs.parse_json`` in the route's one worker thread.

A route with a JSON body declares it with ``json_body(Model)`` (its ``openapi_extra``: the body in
the OpenAPI document) and reads it itself, in this order:

1. on the event loop, what costs no I/O: no key (or no admin token) is refused before a byte of
   the body is read (``deps.screen``, ``deps.require_admin``);
2. on the event loop, the bytes (``await request.body()``);
3. in one worker thread: authenticate (key lookup, rate limits), ``read_json`` (415, 400, 422),
   the work. A big or broken body costs the event loop nothing but its bytes.

FastAPI's own body parameters are not used: FastAPI reads and parses a declared body on the event
loop, with ``json.loads`` (no depth, NaN or NUL rules), before any dependency runs, so it would
parse a stranger's body before refusing him. ``JsonRoute`` refuses a route that declares one.
A body without ``Content-Type`` is taken as JSON; one sent as anything else is a 415.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel

from core.api.errors import ApiError, input_error
from core.inputs import PARSED, InputRefused, json_media, parse_json

Model = TypeVar("Model", bound=BaseModel)

BODY_MODELS: list[type[BaseModel]] = []  # every model declared by json_body: their schemas go to OpenAPI


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` declaring ``model`` as a route's required JSON body."""
    if model not in BODY_MODELS:
        BODY_MODELS.append(model)
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def check_content_type(content_type: str | None) -> None:
    if content_type and not json_media(content_type):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON (Content-Type: application/json), not {content_type[:100]}")


def read_json(content_type: str | None, body: bytes, model: type[Model]) -> Model:
    """``body`` as ``model``: 415, 400 or 422 (pydantic's ``ValidationError``, see ``errors``) if it is not one."""
    check_content_type(content_type)
    try:
        value = parse_json(body)
    except InputRefused as exc:
        raise input_error(exc) from None
    return model.model_validate(value, context=PARSED)


class JsonRoute(APIRoute):
    """Every route of the API: one that declares a FastAPI body parameter is refused (see above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.body_field is not None:
            raise TypeError(f"{self.path}: declare the body with json_body() and read it in the route's "
                            "worker thread (core.api.body), not as a FastAPI body parameter")


def resource_router(**kwargs: Any) -> APIRouter:
    """The router of one resource."""
    return APIRouter(route_class=JsonRoute, **kwargs)
