"""The core's HTTP API (v1): ingest, webhooks, jobs, search, health, metrics, the admin worker pool.

    app.py          create_app(services): the factory
    services.py     Services: settings, pool, cache, embedder, worker pool, the two rate limiters
    deps.py         who is calling: screen (no key) on the event loop, authenticate (key + rate limit), admin
    body.py         JSON bodies: declared with json_body, read by the route, parsed by core.inputs.parse_json
                    in the route's one worker thread, after authentication
    intake.py       queueing documents from any route: the request limits, the durable store
    errors.py       ApiError and the handlers: every failure becomes {"error": {"code", "message"}}
    middleware.py   request duration metrics (499: the client hung up); body size limit, UTF-8 URLs, HEAD
    compression.py  zstd and gzip answers, as Accept-Encoding asks (core.negotiate)
    models.py       the answers' schemas
    openapi.py      /openapi.json, /v1/openapi.json, /docs (offline)
    routers/        one per resource: documents (list, metadata, content), webhooks, jobs, search, admin, health

Every bad input gets a 4xx, and since each write is one transaction, a refused request writes
nothing.
"""

from core.api.app import create_app
from core.api.services import Services, WorkerPoolControl

__all__ = ["Services", "WorkerPoolControl", "create_app"]
