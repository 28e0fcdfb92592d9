"""Request bodies: every declared JSON body is read through ``core.inputs.parse_json``.

``JsonRoute`` is the route class of every router: FastAPI reads and validates a declared body
model as usual, but the JSON comes from the core's own parser (UTF-8, RFC 8259, finite numbers,
Unicode, depth, no NUL), so no body can reach a model, or PostgreSQL, that the parser refused.
A body without ``Content-Type`` is taken as JSON; one sent as anything else is a 415.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from core.api.errors import ApiError, input_error
from core.inputs import InputRefused, parse_json


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except InputRefused as exc:
                raise input_error(exc) from None
        return self._json


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if content_type and not is_json(content_type):
                raise ApiError(415, "unsupported_media_type",
                               f"send the body as JSON (Content-Type: application/json), not {content_type[:100]}")
            return await handler(JsonRequest(request.scope, request.receive))

        return json_handler
