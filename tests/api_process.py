"""One core API in a process of its own, for tests that need several (``python -m tests.api_process
SETTINGS_JSON PORT``): serves until it is terminated."""

from __future__ import annotations

import sys

from core.cache import Cache
from core.config import Settings
from core.db import make_pool


def main(settings_json: str, port: int) -> None:
    import uvicorn

    from core.api import Services, create_app
    from core.embed import make_embedder

    settings = Settings.model_validate_json(settings_json)
    assert settings.database_url
    pool = make_pool(settings.database_url, settings)
    cache = Cache(settings.redis_url, settings.redis_timeout_seconds)
    services = Services(settings, pool, cache, make_embedder(settings))
    uvicorn.run(create_app(services), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off")
    services.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
