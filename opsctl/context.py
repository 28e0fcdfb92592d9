"""How a command finds the running system: flags, then environment, then the config file, then
the state that ``opsctl up`` wrote into its data dir.

When what it finds does not answer, the message says why in the words of the 3 a.m. engineer: an
address that ``opsctl up`` published, with ``opsctl up`` gone, is "opsctl up is not running on
<data dir> (it stopped at …)"; any other address is "cannot connect to PostgreSQL at <host or
socket>: <the driver's reason>".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import DEFAULT_DATA_DIR, Settings, load_settings, read_state
from core.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    import httpx
    import psycopg

NOT_RUNNING = "start the system with `opsctl up` (or set {var})"


def settings(*, with_state: bool = True, **overrides: Any) -> Settings:
    return load_settings(with_state=with_state, **overrides)


def database_url(s: Settings) -> str:
    """The URL opsctl's own connections use (commands and the daemon): ``Settings.direct_url``, a
    session of its own. They take session advisory locks (leader, rotation), set session settings
    (TimeZone, lock_timeout, ef_search while tuning), run DDL and backups: nothing a transaction
    pooler keeps. Behind one, only the data path (the API's pool, the workers' batches) uses it."""
    if not s.direct_url:
        raise ConfigError("no database: " + NOT_RUNNING.format(var="OPSCTL_DATABASE_URL"))
    return s.direct_url


def connect_db(s: Settings) -> psycopg.Connection[Any]:
    from core.db import connect, first_line

    url = database_url(s)
    try:
        return connect(url, autocommit=True)
    except ServiceUnavailable as exc:
        reason = first_line(exc.__cause__ or exc)
        stopped = up_stopped(s, "database_url")
        raise ServiceUnavailable(stopped or f"cannot connect to PostgreSQL at {postgres_address(url)}: {reason}") \
            from exc


def api_client(s: Settings, *, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
    """A client of the core API. A refused connection to the API that ``opsctl up`` published, with
    ``opsctl up`` gone, raises ServiceUnavailable saying so (before any retry); any other refusal
    stays an ``httpx.ConnectError`` (callers retry those), its reason without Python's ``[Errno …]``."""
    import httpx

    if not s.api_url:
        raise ConfigError("no API URL: " + NOT_RUNNING.format(var="OPSCTL_API_URL"))
    token = key if key is not None else s.api_key
    if not token:
        raise ConfigError("no API key: pass --api-key or set OPSCTL_API_KEY (see `opsctl tenant create`)")
    api_url = s.api_url

    class Explaining(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            try:
                return super().handle_request(request)
            except httpx.ConnectError as exc:
                stopped = up_stopped(s, "api_url")
                if stopped:
                    raise ServiceUnavailable(f"the API at {api_url} is not answering: {stopped}") from exc
                reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
                if read_state(s.data_dir).get("api_url") == api_url:
                    reason += ": is opsctl up running?"
                raise httpx.ConnectError(reason, request=request) from exc

    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        transport=Explaining())


def up_stopped(s: Settings, key: str) -> str | None:
    """Why the address ``s.<key>`` does not answer, when ``opsctl up`` published it in its data dir's
    state file and is not running any more (it recorded its stop, or its pid is gone); else None."""
    state = read_state(s.data_dir)
    if not state.get(key) or state.get(key) != getattr(s, key):
        return None
    from core.embedded import pid_alive

    pid = state.get("pid")
    if pid is not None and pid_alive(int(pid)):
        return None
    if pid is not None:
        how = f"its pid {pid} is gone"
    elif state.get("stopped_at"):
        from opsctl.output import timestamp

        how = f"it stopped at {timestamp(state['stopped_at'])}"
    else:
        how = "it is stopped"
    start = ("`make up` (or `opsctl up`)" if s.data_dir == Path(DEFAULT_DATA_DIR)
             else f"`opsctl up --data-dir {s.data_dir}`")
    return f"opsctl up is not running on {s.data_dir} ({how}): start it with {start}"


def postgres_address(url: str) -> str:
    """Where a PostgreSQL URL points, without credentials: ``host:port``, or the Unix socket's path."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # a malformed URL: the driver's own message says what is wrong with it
        return "the configured URL"
    host, port = str(info.get("host") or ""), str(info.get("port") or "5432")
    if not host:
        return f"the default socket (port {port})"
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return f"{host}:{port}"
