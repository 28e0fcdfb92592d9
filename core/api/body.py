"""Request bodies: every JSON body is read through ``core.inputs.parse_json``.

``JsonRoute`` is the route class of every router: FastAPI reads and validates a declared body
model as usual, but the JSON comes from the core's own parser (UTF-8, RFC 8259, finite numbers,
Unicode, depth, no NUL), so no body can reach a model, or PostgreSQL, that the parser refused.
``read_json`` does the same for a route that reads its body itself (``/v1/search``: inside its one
threadpool hop). A body without ``Content-Type`` is taken as JSON; one sent as anything else is a 415.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from core.api.errors import ApiError, input_error
from core.inputs import InputRefused, parse_json

Model = TypeVar("Model", bound=BaseModel)


def check_content_type(content_type: str | None) -> None:
    if not content_type:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON (Content-Type: application/json), not {content_type[:100]}")


def json_value(body: bytes) -> Any:
    try:
        return parse_json(body)
    except InputRefused as exc:
        raise input_error(exc) from None


def read_json(request: Request, body: bytes, model: type[Model]) -> Model:
    """``body`` as ``model``: 415, 400 or 422 (pydantic's ``ValidationError``, see ``errors``) if it is not one."""
    check_content_type(request.headers.get("content-type"))
    return model.model_validate(json_value(body))


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json_value(await self.body())
        return self._json


def resource_router(**kwargs: Any) -> APIRouter:
    """The router of one resource: JSON bodies through ``JsonRoute``, a body without Content-Type is JSON."""
    return APIRouter(route_class=JsonRoute, strict_content_type=False, **kwargs)


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_handler(request: Request) -> Response:
            check_content_type(request.headers.get("content-type"))
            return await handler(JsonRequest(request.scope, request.receive))

        return json_handler
