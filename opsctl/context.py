"""How a command finds the running system: flags, then environment, then the config file, then
the state that ``opsctl up`` wrote into its data dir."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.config import Settings, load_settings
from core.errors import ConfigError

if TYPE_CHECKING:
    import httpx
    import psycopg

NOT_RUNNING = "start the system with `opsctl up` (or set {var})"


def settings(*, with_state: bool = True, **overrides: Any) -> Settings:
    return load_settings(with_state=with_state, **overrides)


def database_url(s: Settings) -> str:
    if not s.database_url:
        raise ConfigError("no database: " + NOT_RUNNING.format(var="OPSCTL_DATABASE_URL"))
    return s.database_url


def connect_db(s: Settings) -> psycopg.Connection[Any]:
    from core.db import connect

    return connect(database_url(s), autocommit=True)


def api_client(s: Settings, *, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
    import httpx

    if not s.api_url:
        raise ConfigError("no API URL: " + NOT_RUNNING.format(var="OPSCTL_API_URL"))
    token = key if key is not None else s.api_key
    if not token:
        raise ConfigError("no API key: pass --api-key or set OPSCTL_API_KEY (see `opsctl tenant create`)")
    return httpx.Client(base_url=s.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
